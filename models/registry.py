"""``PredictorRegistry``: every predictor checkpoint under one directory, loaded once, found by spec.

A worker builds it at start-up and asks ``for_spec(adapter.spec)`` per job. One broken checkpoint
must not take the worker down: it is skipped with a logged warning and recorded in ``failures``
(``load_predictor`` on the same directory raises the error instead).

    checkpoints/
      minilm-harmful-gl_net/    model.safetensors, config.json, meta.json
      minilm-quality-gl_net/    ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch

from lora_io.lora_spec import LoraSpec
from models.checkpoint import CheckpointError
from models.predictor import Predictor, load_predictor

logger = logging.getLogger(__name__)


class PredictorRegistry:
    """Loaded predictors indexed by spec fingerprint (and by ``predictor_id``, which must be unique)."""

    def __init__(
        self, predictors: Iterable[Predictor] = (), failures: dict[str, str] | None = None
    ) -> None:
        self._predictors: list[Predictor] = []
        self.failures: dict[str, str] = dict(failures or {})
        for p in predictors:
            self.add(p)

    def add(self, predictor: Predictor) -> None:
        """Register a loaded predictor; a second one with the same ``predictor_id`` is refused."""
        if any(p.config.predictor_id == predictor.config.predictor_id for p in self._predictors):
            raise ValueError(
                f"predictor_id {predictor.config.predictor_id!r} is already registered"
            )
        self._predictors.append(predictor)

    @classmethod
    def from_directory(
        cls, directory: str | Path, *, device: str | torch.device = "cpu"
    ) -> PredictorRegistry:
        """Load every checkpoint subdirectory of ``directory`` (sorted; hidden ones ignored)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {str(directory)!r} does not exist")
        registry = cls()
        for sub in sorted(
            p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")
        ):
            try:
                predictor = load_predictor(sub, device=device)
                registry.add(predictor)
            except (CheckpointError, ValueError) as exc:
                logger.warning("skipping checkpoint %s: %s", sub, exc)
                registry.failures[str(sub)] = str(exc)
        logger.info(
            "loaded %d predictor(s) from %s, skipped %d",
            len(registry),
            directory,
            len(registry.failures),
        )
        return registry

    def __len__(self) -> int:
        return len(self._predictors)

    def all(self) -> list[Predictor]:
        return list(self._predictors)

    def for_spec(self, spec: LoraSpec | str) -> list[Predictor]:
        """Predictors trained for ``spec`` (a ``LoraSpec`` or its fingerprint); empty if none."""
        fingerprint = spec if isinstance(spec, str) else spec.fingerprint
        return [p for p in self._predictors if p.config.spec.fingerprint == fingerprint]

    def related(self, spec: LoraSpec) -> list[Predictor]:
        """Predictors of another spec that shares modules (name and shape) with ``spec``: the same
        base model adapted on a different module set (more layers, other projections)."""
        mine = set(spec.modules)
        return [
            p
            for p in self._predictors
            if p.config.spec != spec and mine & set(p.config.spec.modules)
        ]

    def get(self, predictor_id: str) -> Predictor:
        for p in self._predictors:
            if p.config.predictor_id == predictor_id:
                return p
        raise KeyError(predictor_id)
