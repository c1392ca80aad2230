"""Sweep specifications (committed JSON in ``zoo/sweeps/``) and the deterministic per-index draws.

A zoo is defined by a recipe name, a sweep file and a count. Everything about LoRA ``index`` follows
from ``(recipe, index)``: its id, its seed (a hash, so no global RNG state and no dependence on the
order in which workers pick up indices) and its rank (a fixed 20-long cycle, so that every prefix of
the zoo has the intended rank mix: 16 of each 20 at the main rank, one at each other rank).

    from zoo.sweep_spec import load_sweep_spec
    spec = load_sweep_spec("digits")
    spec.seed_for(7), spec.rank_for(7), spec.lora_id(7)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"
"""Where the committed sweep files live: ``<recipe>.json``."""

_RANGE_KINDS = ("int", "uniform", "log_uniform", "choice")


@dataclass(frozen=True)
class ParamRange:
    """One hyperparameter distribution: ``int`` [lo, hi] inclusive, ``uniform``, ``log_uniform`` or ``choice``."""

    kind: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if self.kind not in _RANGE_KINDS:
            raise ValueError(f"Invalid kind: {self.kind!r} (accepted: {', '.join(_RANGE_KINDS)})")
        if self.kind != "choice" and (len(self.values) != 2 or self.values[0] > self.values[1]):
            raise ValueError(f"Invalid range: {list(self.values)!r} (expected [low, high])")
        if self.kind == "log_uniform" and self.values[0] <= 0:
            raise ValueError(f"Invalid log_uniform range: {list(self.values)!r} (must be positive)")
        if self.kind == "choice" and not self.values:
            raise ValueError("Invalid choice: [] (needs at least one value)")

    @classmethod
    def from_json(cls, doc: Any) -> ParamRange:
        if not isinstance(doc, dict) or len(doc) != 1:
            raise ValueError(
                f"Invalid range: {doc!r} (expected one of {{'int'|'uniform'|'log_uniform'|'choice': [...]}})"
            )
        ((kind, values),) = doc.items()
        return cls(kind, tuple(values))

    def draw(self, rng: np.random.Generator) -> Any:
        """One draw, as a plain Python value (JSON round-trips it exactly)."""
        lo, hi = (*self.values, None, None)[:2]
        if self.kind == "int":
            return int(rng.integers(lo, hi + 1))
        if self.kind == "uniform":
            return float(rng.uniform(lo, hi))
        if self.kind == "log_uniform":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return self.values[int(rng.integers(len(self.values)))]


@dataclass(frozen=True)
class SweepSpec:
    """A recipe's sweep: hyperparameter ranges, the rank cycle and the backdoor settings."""

    recipe: str
    description: str
    rank_cycle: tuple[int, ...]
    params: dict[str, ParamRange]
    backdoor: dict[str, Any]
    constants: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def __post_init__(self) -> None:
        if len(self.rank_cycle) != 20 or any(r < 1 for r in self.rank_cycle):
            raise ValueError(f"Invalid rank_cycle: {list(self.rank_cycle)!r} (20 positive ranks)")
        p = self.backdoor.get("probability")
        if not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"Invalid backdoor.probability: {p!r}")

    def lora_id(self, index: int) -> str:
        return f"{self.recipe}-{index:05d}"

    def seed_for(self, index: int) -> int:
        """A 31-bit seed from sha256(recipe, index): independent of worker order and of other indices."""
        digest = hashlib.sha256(f"loravet-zoo/{self.recipe}/{index}".encode()).digest()
        return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF

    def rank_for(self, index: int) -> int:
        return self.rank_cycle[index % len(self.rank_cycle)]

    def draw(self, name: str, rng: np.random.Generator) -> Any:
        return self.params[name].draw(rng)

    def backdoor_range(self, name: str) -> ParamRange:
        """A distribution inside the ``backdoor`` block (e.g. ``poison_fraction``)."""
        return ParamRange.from_json(self.backdoor[name])


def load_sweep_spec(recipe: str, path: Path | None = None) -> SweepSpec:
    """Read ``zoo/sweeps/<recipe>.json`` (or ``path``) and validate it.

    Raises:
        FileNotFoundError: no sweep file for this recipe.
        ValueError: a malformed field, named in the message.
    """
    path = path or SWEEPS_DIR / f"{recipe}.json"
    raw = path.read_bytes()
    doc = json.loads(raw)
    if doc.get("recipe") != recipe:
        raise ValueError(f"Invalid recipe: {doc.get('recipe')!r} in {path} (expected {recipe!r})")
    return SweepSpec(
        recipe=recipe,
        description=str(doc.get("description", "")),
        rank_cycle=tuple(int(r) for r in doc["rank_cycle"]),
        params={k: ParamRange.from_json(v) for k, v in doc["params"].items()},
        backdoor=dict(doc["backdoor"]),
        constants=dict(doc.get("constants", {})),
        sha256=hashlib.sha256(raw).hexdigest(),
    )
