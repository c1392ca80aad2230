"""``LoraSpec``: which modules an adapter touches and their shapes, with a stable fingerprint.

A predictor is trained for one spec (one base model, one set of target modules); the worker matches
adapters to predictors by fingerprint. Ranks are deliberately not part of the spec: nothing in the
models depends on r, so the same predictor serves every rank.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from typing import cast


@dataclass(frozen=True)
class ModuleShape:
    """One adapted module: its normalised dotted name and the (out, in) of its weight delta.

    Conv modules are flattened: ``in_features = in_channels * kh * kw``.
    """

    name: str
    out_features: int
    in_features: int


@dataclass(frozen=True)
class LoraSpec:
    """Ordered module shapes (natural order of names), independent of rank and key order."""

    modules: tuple[ModuleShape, ...]

    @functools.cached_property
    def fingerprint(self) -> str:
        """16 hex digits of sha256 over the names and shapes; equal specs, equal fingerprints
        (computed once per spec: registries and batches compare fingerprints per adapter)."""
        canon = json.dumps(
            [[m.name, m.out_features, m.in_features] for m in self.modules], separators=(",", ":")
        )
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple((m.out_features, m.in_features) for m in self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def to_json(self) -> list[dict[str, object]]:
        return [
            {"name": m.name, "out_features": m.out_features, "in_features": m.in_features}
            for m in self.modules
        ]

    @classmethod
    def from_json(cls, rows: list[dict[str, object]]) -> LoraSpec:
        return cls(
            tuple(
                ModuleShape(
                    str(r["name"]),
                    int(cast(int, r["out_features"])),
                    int(cast(int, r["in_features"])),
                )
                for r in rows
            )
        )
