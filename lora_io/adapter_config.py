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
from dataclasses import dataclass, field
from typing import Any

from lora_io.errors import AdapterConfigError

MAX_CONFIG_BYTES = 1 << 20
"""adapter_config.json cap (1 MiB); real ones are about 1 KB."""


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

    def rank_for(self, module: str) -> int:
        key = _pattern_key(self.rank_pattern, module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_for(self, module: str) -> float:
        key = _pattern_key(self.alpha_pattern, module)
        return float(self.alpha_pattern[key]) if key is not None else self.lora_alpha

    def scale_for(self, module: str, rank: int) -> float:
        """Scale of ``B A`` for ``module`` whose factors have rank ``rank`` (read from the shapes)."""
        alpha = self.alpha_for(module)
        return alpha / math.sqrt(rank) if self.use_rslora else alpha / rank


def _pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    for key in patterns:
        try:
            if re.match(rf"(.*\.)?({key})$", module):
                return key
        except re.error:
            raise AdapterConfigError(
                f"rank/alpha pattern {key!r} is not a valid regular expression"
            ) from None
    return None


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
    for pattern in (*rank_pattern, *alpha_pattern):
        try:
            re.compile(pattern)
        except re.error:
            raise AdapterConfigError(
                f"adapter_config.json: rank/alpha pattern {pattern!r} is not a valid regular expression"
            ) from None
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
