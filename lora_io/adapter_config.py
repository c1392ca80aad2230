"""``adapter_config.json`` -> per-module rank and scale, as PEFT computes them.

PEFT keeps ``lora_alpha`` in the config, not in the weights, so without the config the scale of
``B A`` is unknown: we then assume ``alpha = r`` (scale 1) and say so in the report. rsLoRA uses
``alpha / sqrt(r)``; ``rank_pattern`` / ``alpha_pattern`` override r and alpha per module with the
same regex rule PEFT applies (``(.*\\.)?(<pattern>)$`` against the module path, first match wins).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field

# CPython's own regex parser: the one way to inspect a pattern's structure without running it
# (typeshed has no stubs for these private modules)
from re import _constants as _sre  # type: ignore[attr-defined]
from re import _parser as _sre_parser  # type: ignore[attr-defined]
from typing import Any

from lora_io.errors import AdapterConfigError

MAX_CONFIG_BYTES = 1 << 20
"""adapter_config.json cap (1 MiB); real ones are about 1 KB."""

MAX_PATTERNS = 4096
"""Most ``rank_pattern`` + ``alpha_pattern`` entries (PEFT writes one per module that differs)."""

MAX_PATTERN_CHARS = 512
"""Longest pattern accepted (PEFT writes module names; a module name is at most 1,024 bytes)."""

MAX_PATTERN_REPEATS = 2
"""Most repetition operators (``*``, ``+``, ``{m,n}``) in one pattern: keeps a match polynomial and small."""

PATTERN_TIME_BUDGET_S = 2.0
"""Wall time all pattern matching of one config may take before the config is refused."""


@dataclass(frozen=True)
class AdapterConfig:
    """The fields of a PEFT LoRA config that decide the applied delta."""

    r: int
    lora_alpha: float
    use_rslora: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: tuple[str, ...] = ()
    base_model_name_or_path: str | None = None
    fan_in_fan_out: bool = False
    _match_cost: list[float] = field(default_factory=lambda: [0.0], repr=False, compare=False)

    def rank_for(self, module: str) -> int:
        key = _pattern_key(self.rank_pattern, module, self._match_cost)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        key = _pattern_key(self.alpha_pattern, module, self._match_cost)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale_for(self, module: str, rank: int) -> float:
        """Scale of ``B A`` for ``module`` whose factors have rank ``rank`` (read from the shapes)."""
        alpha = self.alpha_for(module)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern_key(
    patterns: dict[str, Any], module: str, spent: list[float] | None = None
) -> str | None:
    """The first pattern matching ``module`` as PEFT matches it: ``(.*\\.)?(<pattern>)$``.

    Evaluated as a full match of the pattern against the whole name and against each part after a
    dot (the same rule, without the leading ``.*`` that a hostile pattern could multiply), within the
    config's time budget (``spent`` accumulates seconds across calls).
    """
    if not patterns:
        return None
    starts = [0] + [i + 1 for i, c in enumerate(module) if c == "."]
    t0 = time.perf_counter()
    try:
        for key in patterns:
            compiled = _compiled(key)
            for start in starts:  # pos, not a slice: ``^`` still means the start of the name
                if compiled.fullmatch(module, start) is not None:
                    return key
                if (
                    spent is not None
                    and spent[0] + time.perf_counter() - t0 > PATTERN_TIME_BUDGET_S
                ):
                    raise AdapterConfigError(
                        f"adapter_config.json rank/alpha patterns took more than {PATTERN_TIME_BUDGET_S:g} s "
                        "to match against the module names; use plain module names as PEFT writes them"
                    )
        return None
    finally:
        if spent is not None:
            spent[0] += time.perf_counter() - t0


def _compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error:
        raise AdapterConfigError(
            f"rank/alpha pattern {pattern!r} is not a valid regular expression"
        ) from None


_REPEATS = (_sre.MAX_REPEAT, _sre.MIN_REPEAT, getattr(_sre, "POSSESSIVE_REPEAT", _sre.MAX_REPEAT))


def pattern_problem(pattern: str) -> str | None:
    """Why a rank/alpha pattern is refused, or ``None``.

    Patterns are regular expressions matched against module names taken from the (untrusted) file,
    so the ones that can take exponential time are refused: a repetition inside a repetition
    (``(a+)+``), a repeated alternation (``(a|a)*``) and backreferences; and at most
    :data:`MAX_PATTERN_REPEATS` repetitions, which keeps every match polynomial and small.
    """
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"is {len(pattern):,} characters; at most {MAX_PATTERN_CHARS} are accepted"
    try:
        parsed = _sre_parser.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return "is not a valid regular expression"
    repeats = 0

    def walk(items: Any, in_repeat: bool) -> str | None:
        nonlocal repeats
        for op, av in items:
            sub: list[Any] = []
            inner = in_repeat
            if op in _REPEATS:
                _lo, hi, body = av
                if hi > 1:
                    if in_repeat:
                        return "nests a repetition inside a repetition"
                    if any(o in (_sre.BRANCH, _sre.GROUPREF_EXISTS) for o, _ in _flatten(body)):
                        return "repeats an alternation"
                    repeats += 1
                    inner = True
                sub = [body]
            elif op == _sre.SUBPATTERN:
                sub = [av[3]]
            elif op == _sre.BRANCH:
                sub = list(av[1])
            elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
                sub = [av[1]]
            elif op == _sre.ATOMIC_GROUP:
                sub = [av]
            elif op in (_sre.GROUPREF, _sre.GROUPREF_IGNORE, _sre.GROUPREF_EXISTS):
                return "uses a backreference"
            for s in sub:
                why = walk(s, inner)
                if why:
                    return why
        return None

    why = walk(parsed, False)
    if why is None and repeats > MAX_PATTERN_REPEATS:
        why = f"has {repeats} repetitions; at most {MAX_PATTERN_REPEATS} are accepted"
    return why


def _flatten(items: Any) -> list[tuple[Any, Any]]:
    """Every (op, arg) in a parsed pattern, nested ones included."""
    out: list[tuple[Any, Any]] = []
    for op, av in items:
        out.append((op, av))
        if op in _REPEATS:
            out += _flatten(av[2])
        elif op == _sre.SUBPATTERN:
            out += _flatten(av[3])
        elif op == _sre.BRANCH:
            for b in av[1]:
                out += _flatten(b)
        elif op in (_sre.ASSERT, _sre.ASSERT_NOT):
            out += _flatten(av[1])
        elif op == _sre.ATOMIC_GROUP:
            out += _flatten(av)
    return out


def parse_adapter_config(raw: bytes | str) -> AdapterConfig:
    """Parse the JSON text of an ``adapter_config.json``.

    Raises:
        AdapterConfigError: unreadable JSON, a non-LoRA ``peft_type``, DoRA, or bad field types.
    """
    if isinstance(raw, bytes):
        if len(raw) > MAX_CONFIG_BYTES:
            raise AdapterConfigError(
                f"adapter_config.json is {len(raw):,} bytes; at most {MAX_CONFIG_BYTES:,} are accepted"
            )
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AdapterConfigError("adapter_config.json is not UTF-8 text") from None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise AdapterConfigError(f"adapter_config.json is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise AdapterConfigError("adapter_config.json must be a JSON object")
    peft_type = doc.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise AdapterConfigError(
            f"adapter_config.json has peft_type {peft_type!r}; only plain LoRA (peft_type LORA) is accepted"
        )
    if doc.get("use_dora"):
        raise AdapterConfigError(
            "adapter_config.json enables DoRA (use_dora: true); only plain LoRA is accepted"
        )
    try:
        r = int(doc.get("r", 8))
        alpha = float(doc.get("lora_alpha", 8))
        rank_pattern = {str(k): int(v) for k, v in (doc.get("rank_pattern") or {}).items()}
        alpha_pattern = {str(k): float(v) for k, v in (doc.get("alpha_pattern") or {}).items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise AdapterConfigError(
            f"adapter_config.json has a malformed r/lora_alpha/pattern field: {exc}"
        ) from None
    if len(rank_pattern) + len(alpha_pattern) > MAX_PATTERNS:
        raise AdapterConfigError(
            f"adapter_config.json has {len(rank_pattern) + len(alpha_pattern):,} rank/alpha patterns; "
            f"at most {MAX_PATTERNS:,} are accepted"
        )
    for pattern in (*rank_pattern, *alpha_pattern):
        why = pattern_problem(pattern)
        if why:
            raise AdapterConfigError(
                f"adapter_config.json: rank/alpha pattern {pattern[:80]!r} {why}; "
                "accepted are module names as PEFT writes them, or simple regular expressions"
            )
    if r <= 0 or not math.isfinite(alpha):
        raise AdapterConfigError(
            f"adapter_config.json: r must be positive and lora_alpha finite (got r={r}, lora_alpha={alpha})"
        )
    targets = doc.get("target_modules") or ()
    if isinstance(targets, str):
        targets = (targets,)
    base = doc.get("base_model_name_or_path")
    return AdapterConfig(
        r=r,
        lora_alpha=alpha,
        use_rslora=bool(doc.get("use_rslora", False)),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        target_modules=tuple(str(t) for t in targets),
        base_model_name_or_path=str(base) if base is not None else None,
        fan_in_fan_out=bool(doc.get("fan_in_fan_out", False)),
    )
