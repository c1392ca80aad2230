"""Metrics per group of LoRAs that share a drawn hyperparameter: which attacks a detector misses.

One AUROC over a split hides where a detector fails. Grouping by a hyperparameter the recipe drew
(``trigger``, ``rank``, ``n_poisoned``, ...) shows it: for a harmful predictor each group is the
group's harmful LoRAs against *all* clean LoRAs of the split (clean LoRAs draw a trigger too, but
never use it, so grouping them would only shrink the negatives); for quality and membership a group
is simply its own LoRAs. A numeric hyperparameter with more than ``MAX_GROUPS`` values is cut into
tertiles, so ``--by n_poisoned`` reads "few / middling / many poisoned examples".
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np

from training.train_loop import task_metrics
from training.zoo_dataset import Task, Zoo, ZooError

MAX_GROUPS = 12
"""More distinct numeric values than this are binned into tertiles."""

MIN_GROUP = 3
"""A group needs this many LoRAs of its own (harmful ones, for harmful) to get metrics."""


def numeric_draws(values: list[Any]) -> bool:
    """Whether every value is a number a recipe drew (a bool is a yes/no draw, not a number)."""
    return all(isinstance(v, Real) and not isinstance(v, bool) for v in values)


def _group_names(values: list[Any], counted: np.ndarray) -> list[str]:
    """One group name per LoRA: the value itself, or its tertile ``[lo, hi]`` for a wide numeric.

    Tertile edges come from the ``counted`` LoRAs only (the harmful ones, for harmful: the clean
    LoRAs' ``n_poisoned`` of 0 would otherwise swallow the lowest third)."""
    present = [v for v, c in zip(values, counted, strict=True) if v is not None and c]
    numeric = bool(present) and numeric_draws(present)
    if not numeric or len(set(present)) <= MAX_GROUPS:
        return ["(none)" if v is None else str(v) for v in values]
    column = np.asarray(present, dtype=np.float64)
    edges = np.quantile(column, [0.0, 1 / 3, 2 / 3, 1.0])
    names = []
    for v in values:
        if v is None:
            names.append("(none)")
            continue
        k = min(int(np.searchsorted(edges[1:-1], float(v), side="right")), 2)
        names.append(f"[{edges[k]:g}, {edges[k + 1]:g}]")
    return names


def _order(group: str) -> tuple[float, str]:
    """Numeric groups (and tertiles, by their low edge) in numeric order, then the rest by name."""
    try:
        return float(group.lstrip("[").split(",")[0]), group
    except ValueError:
        return float("inf"), group


def metrics_by(
    zoo: Zoo,
    name: str,
    task: Task,
    ids: list[str],
    y: np.ndarray,
    pred: np.ndarray,
    threshold: float | None,
) -> dict[str, dict[str, Any]]:
    """``{group: {"n": LoRAs in the group, "metrics": ...}}`` for hyperparameter ``name``.

    ``y`` and ``pred`` are (N, out) in the order of ``ids``. Groups too small for a metric are kept
    with their size and no metrics, so a reader sees they exist."""
    values = [zoo.rows[i].hyperparameters.get(name) for i in ids]
    if all(v is None for v in values):
        drawn = sorted({k for i in ids for k in zoo.rows[i].hyperparameters})
        raise ZooError(
            f"no LoRA of the split records hyperparameter {name!r}; recorded: {', '.join(drawn)}"
        )
    harmful = y[:, 0] > 0.5 if task == "harmful" else None
    groups = np.asarray(
        _group_names(values, np.ones(len(ids), bool) if harmful is None else harmful)
    )
    out: dict[str, dict[str, Any]] = {}
    for group in sorted(set(groups.tolist()), key=_order):
        member = groups == group
        if harmful is not None:
            member = member & harmful
            select = member | ~harmful
        else:
            select = member
        n = int(member.sum())
        if n == 0:
            continue
        entry: dict[str, Any] = {"n": n}
        if n >= MIN_GROUP and (harmful is None or (~harmful).any()):
            entry["metrics"] = task_metrics(task, y[select], pred[select], threshold)
        out[group] = entry
    return out
