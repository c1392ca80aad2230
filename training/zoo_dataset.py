"""Read a zoo (manifest + splits + adapters) into a ``LoraBatch`` and per-task targets.

A zoo is small enough to hold in memory (10,000 digits LoRAs are ~50 MB of float32 factors), so it
is read once through ``lora_io`` (the same reader the service uses) and cached as tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lora_io import LoraSpec, load_adapter
from models.lora_batch import LoraBatch
from zoo.zoo_manifest import ZooFormatError, ZooRow, read_zoo

Task = Literal["quality", "harmful", "membership"]
TASKS: tuple[Task, ...] = ("quality", "harmful", "membership")


class ZooError(ValueError):
    """A zoo directory that cannot be used (missing files, unknown split or task)."""


@dataclass(frozen=True)
class Zoo:
    """Manifest rows (typed, ``zoo.zoo_manifest.ZooRow``) and splits of one zoo directory."""

    root: Path
    rows: dict[str, ZooRow]
    splits: dict[str, list[str]]
    info: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> Zoo:
        try:
            contents = read_zoo(root)
        except ZooFormatError as exc:
            raise ZooError(str(exc)) from None
        return cls(contents.root, contents.rows, contents.splits, contents.info)

    def ids(self, split: str) -> list[str]:
        if split == "all":
            return sorted(self.rows)
        if split not in self.splits:
            raise ZooError(
                f"unknown split {split!r}; this zoo has: all, {', '.join(sorted(self.splits))}"
            )
        return [i for i in self.splits[split] if i in self.rows]

    def label_names(self, task: Task) -> list[str]:
        if task == "membership":
            names = self.info.get("membership_names") or self.info.get("label_names", {}).get(
                "membership"
            )
            if names:
                return list(names)
            first = next(iter(self.rows.values()))
            return [f"label_{i}" for i in range(len(_membership(first)))]
        return [task]


def _membership(row: ZooRow) -> list[float]:
    for key in ("membership", "topics", "classes"):
        if key in row.labels:
            return [float(x) for x in row.labels[key]]
    raise ZooError(f"row {row.id} has no membership labels (topics/classes)")


def target(row: ZooRow, task: Task) -> list[float] | None:
    """The target vector of one manifest row for ``task``, or None when the row is left out of it."""
    if task == "quality":
        return [quality_label(row)]
    if task == "harmful":
        return None if row.harmful is None else [float(row.harmful)]
    return _membership(row)


def quality_label(row: ZooRow) -> float:
    """A manifest row's measured quality (every row has one)."""
    return float(row.labels["quality"])


@dataclass(frozen=True)
class TaskData:
    """Adapters of one split that have a label for the task, as a batch and a target matrix."""

    ids: list[str]
    batch: LoraBatch
    y: np.ndarray  # (N, out)

    def __len__(self) -> int:
        return len(self.ids)


def adapter_paths(zoo: Zoo, row: ZooRow) -> tuple[Path, Path | None]:
    file = zoo.root / row.file
    config = file.parent / "adapter_config.json"
    return file, (config if config.is_file() else None)


_CACHE: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def load_task(
    zoo: Zoo,
    split: str,
    task: Task,
    *,
    spec: LoraSpec | None = None,
    dtype: torch.dtype = torch.float32,
) -> TaskData:
    """Every adapter of ``split`` with a label for ``task``, read through ``lora_io``."""
    if task not in TASKS:
        raise ZooError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    ids, ys, adapters = [], [], []
    for lora_id in zoo.ids(split):
        row = zoo.rows[lora_id]
        y = target(row, task)
        if y is None:
            continue
        file, config = adapter_paths(zoo, row)
        adapters.append(load_adapter(file, config=config))
        ids.append(lora_id)
        ys.append(y)
    if not ids:
        raise ZooError(f"split {split!r} of {zoo.root} has no adapters labelled for task {task!r}")
    batch = LoraBatch.from_adapters(adapters, spec=spec, dtype=dtype)
    return TaskData(ids, batch, np.asarray(ys, dtype=np.float64))
