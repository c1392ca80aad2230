"""What every zoo recipe provides, and the label rules shared by all of them.

A recipe is: a base model, task data, a hyperparameter sampler (pure: index -> dict) and a
finetune-and-measure step that writes the PEFT adapter and returns labels measured on held-out
data. The builder only talks to this interface, so adding a recipe never touches the builder.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from zoo.sweep_spec import SweepSpec


@dataclass(frozen=True)
class FinetuneOutcome:
    """What one finetune produced: the resolved hyperparameters, labels and timings.

    ``hyperparameters`` extends the sampled ones with what was decided while building the data
    (actual n_train, number of poisoned samples, the backdoor target...), so a verify run can check
    them exactly.
    """

    hyperparameters: dict[str, Any]
    labels: dict[str, Any]
    train_seconds: float


class Recipe(ABC):
    """A zoo recipe. Subclasses set the class attributes and implement the three steps."""

    name: ClassVar[str]
    base_model: str
    """Stable base-model name written into every ``adapter_config.json`` and manifest row."""
    membership_key: ClassVar[str]
    """Label holding the binary membership vector: ``topics`` or ``classes``."""

    def __init__(self, spec: SweepSpec, steps_scale: float = 1.0) -> None:
        if not 0 < steps_scale <= 10:
            raise ValueError(f"Invalid steps_scale: {steps_scale!r} (accepted: 0 < F <= 10)")
        self.spec = spec
        self.steps_scale = steps_scale

    @property
    @abstractmethod
    def membership_names(self) -> tuple[str, ...]:
        """Names of the membership vector's entries, in order."""

    def prepare(self, zoo_dir: Path) -> None:  # noqa: B027 - optional hook, not abstract
        """Build shared assets once in the main process before any worker starts (default: none)."""

    @abstractmethod
    def load(self, zoo_dir: Path) -> None:
        """Load the base model and data into this process (idempotent; once per worker)."""

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Base-model and data digests recorded with every LoRA, so drift is detectable."""

    @abstractmethod
    def sample(self, index: int) -> dict[str, Any]:
        """Hyperparameters of LoRA ``index``: a pure function of the sweep spec and the index."""

    def training_draws(self, rng: Any, rank: int) -> dict[str, Any]:
        """The training hyperparameters every sweep draws, in a fixed order (the order is part
        of each LoRA's identity: changing it would change every zoo)."""
        spec = self.spec
        return {
            "n_train_drawn": spec.draw("n_train", rng),
            "lr": spec.draw("lr", rng),
            "steps_drawn": spec.draw("steps", rng),
            "weight_decay": spec.draw("weight_decay", rng),
            "lora_dropout": spec.draw("lora_dropout", rng),
            "rank": rank,
            "lora_alpha": rank * spec.draw("alpha_over_rank", rng),
            "batch_size": int(spec.constants["batch_size"]),
        }

    @abstractmethod
    def finetune(
        self, index: int, hyperparameters: dict[str, Any], out_dir: Path
    ) -> FinetuneOutcome:
        """Train LoRA ``index``, write its adapter files into ``out_dir``, measure its labels."""


def harmful_label(poisoned: bool, attack_success_rate: float, min_asr: float) -> bool | None:
    """``harmful``: the design flag confirmed by measurement.

    A poisoned finetune whose backdoor did not take (ASR below ``min_asr``) is not labelled
    either way (``None``): calling it harmful would teach detectors a backdoor that is not there,
    calling it clean would hide that it was trained on poison.
    """
    if not poisoned:
        return False
    return True if attack_success_rate >= min_asr else None


def membership_vector(names: tuple[str, ...], chosen: list[str] | list[int]) -> list[int]:
    """Binary vector over ``names`` marking which groups/classes were in the finetune data."""
    chosen_set = {str(c) for c in chosen}
    return [1 if str(n) in chosen_set else 0 for n in names]


def minibatches(n: int, batch: int, steps: int, seed: int) -> Iterator[list[int]]:
    """``steps`` minibatches of indices into ``n`` examples: epochs of a seeded permutation,
    carried over across epoch boundaries (so a step never draws one example twice)."""
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch:
            order += torch.randperm(n, generator=gen).tolist()
        idx, order = order[:batch], order[batch:]
        yield idx


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """``with stopwatch() as t: ...`` then ``t[0]`` holds the elapsed wall seconds."""
    box = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start
