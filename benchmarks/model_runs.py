"""E1, E2 and E5 cells: train a model on a zoo task for several seeds and measure it on held-out splits."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.quality_via_task import RIDGE_ALPHAS, fit_ridge, task_features
from training import metrics
from training.train_loop import TrainConfig, fit, predict_raw, task_metrics, to_user_units
from training.zoo_dataset import Task, TaskData, Zoo, load_task, quality_label
from zoo.zoo_manifest import write_json_atomic


def _config(task: Task, model: str, seed: int, spec: dict[str, Any]) -> TrainConfig:
    train = {**spec["train"], **spec["models"][model].get("train", {})}
    return TrainConfig(
        task=task, model=model, seed=seed, hparams=spec["models"][model].get("hparams", {}), **train
    )


class SeedProgress:
    """The finished seeds of one cell, kept on disk until the cell's result is written.

    Why: a cell trains its model once per seed, and a GL-net cell on the causal-lm zoo takes about
    an hour; a session that ends mid-cell would otherwise throw away every seed it finished. A seed
    is reused only under the same cell key (spec, zoo and code hashes), and every fit is seeded on
    its own (``torch.manual_seed(seed)`` in ``fit``), so a resumed cell reports what an
    uninterrupted run would have, its recorded training times included. With no path it keeps
    nothing (the runners called directly, as in the refactor check)."""

    def __init__(self, path: Path | None = None, key: dict[str, Any] | None = None) -> None:
        self.path, self.key = path, key
        self.done: dict[int, Any] = {}
        if path is not None and path.is_file():
            try:
                doc = json.loads(path.read_text())
            except json.JSONDecodeError:  # a damaged file: start the cell over
                doc = {}
            if doc.get("key") == key:
                self.done = {int(seed): r for seed, r in doc.get("seeds", {}).items()}

    def run(self, seed: int, fit_seed: Callable[[], Any]) -> Any:
        if seed not in self.done:
            self.done[seed] = fit_seed()
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_json_atomic(self.path, {"key": self.key, "seeds": self.done})
        return self.done[seed]


def mean_std(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if v == v]  # drop NaN
    if not vals:
        return {"mean": float("nan"), "std": float("nan")}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
    }


def summarise(per_seed: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], float)]
    return {k: mean_std([s[k] for s in per_seed]) for k in keys}


def clean_part(data: TaskData) -> TaskData:
    """The clean finetunes of a harmful-task split."""
    keep = np.flatnonzero(data.y[:, 0] == 0)
    return TaskData([data.ids[k] for k in keep], data.batch.select(keep.tolist()), data.y[keep])


def fitting_set(train: TaskData, model: str, spec: dict[str, Any]) -> TaskData:
    """What a model is fitted on: the train split, or its clean part for a model whose spec entry
    says ``"fit_on": "clean"`` (the token scan's baseline of clean finetunes)."""
    return clean_part(train) if spec["models"][model].get("fit_on") == "clean" else train


def run_e1_cell(
    zoo_dir: str, task: Task, model: str, spec: dict[str, Any], progress: SeedProgress | None = None
) -> dict[str, Any]:
    torch.set_num_threads(1)
    progress = progress or SeedProgress()
    zoo = Zoo.open(zoo_dir)
    train = load_task(zoo, "train", task)
    val = load_task(zoo, "val", task, spec=train.batch.spec)
    test = load_task(zoo, "test", task, spec=train.batch.spec)
    train = fitting_set(train, model, spec)

    def one_seed(seed: int) -> dict[str, float]:
        result = fit(_config(task, model, seed, spec), train, val)
        pred = to_user_units(
            task, predict_raw(result.model, test.batch), result.target_mean, result.target_std
        )
        return {**task_metrics(task, test.y, pred, result.threshold), "train_seconds": result.seconds,
                "best_epoch": float(result.best_epoch)}  # fmt: skip

    per_seed = [progress.run(seed, functools.partial(one_seed, seed)) for seed in spec["seeds"]]
    return {
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "per_seed": per_seed,
        "summary": summarise(per_seed),
    }


def run_e2_cell(
    zoo_dir: str, task: Task, model: str, spec: dict[str, Any], progress: SeedProgress | None = None
) -> dict[str, Any]:
    torch.set_num_threads(1)
    progress = progress or SeedProgress()
    zoo = Zoo.open(zoo_dir)
    train = load_task(zoo, spec["train_split"], task)
    val = load_task(zoo, spec["val_split"], task, spec=train.batch.spec)
    train = fitting_set(train, model, spec)
    tests = {}
    for r in spec["test_ranks"]:
        name = f"rank_generalisation/test/{r}"
        if name in zoo.splits:
            tests[r] = load_task(zoo, name, task, spec=train.batch.spec)

    def one_seed(seed: int) -> dict[str, dict[str, float]]:
        result = fit(_config(task, model, seed, spec), train, val)
        by_rank = {}
        for r, data in tests.items():
            pred = to_user_units(
                task, predict_raw(result.model, data.batch), result.target_mean, result.target_std
            )
            by_rank[str(r)] = task_metrics(task, data.y, pred, result.threshold)
        return by_rank

    per_seed = [progress.run(seed, functools.partial(one_seed, seed)) for seed in spec["seeds"]]
    summary = {r: summarise([s[r] for s in per_seed]) for r in per_seed[0]}
    return {"n_train": len(train), "test_sizes": {str(r): len(d) for r, d in tests.items()}, "per_seed": per_seed,
            "summary": summary}  # fmt: skip


def pair_features(x: np.ndarray) -> np.ndarray:
    """``(N, L)`` label indicators or probabilities -> ``(N, L + L(L-1)/2)``: each label and each
    pair of labels (a pair of topics can be harder together than either alone)."""
    return task_features(x, pairs=True)


FEATURES = {"labels": lambda x: x, "labels+pairs": pair_features}


def task_to_quality(
    train_labels: np.ndarray,
    train_quality: np.ndarray,
    val_inputs: np.ndarray,
    val_quality: np.ndarray,
) -> tuple[str, float, Any]:
    """The map from a task (the zoo's membership labels) to the quality finetunes of that task
    reach: ridge on the true labels of the train split, its features and alpha chosen by R^2 on
    ``val_inputs`` (true labels, or a model's predicted probabilities). Returns
    ``(features, alpha, predict)``."""
    best: tuple[float, str, float, Any] | None = None
    for name, feats in FEATURES.items():
        for alpha in RIDGE_ALPHAS:
            w, b = fit_ridge(feats(train_labels), train_quality, alpha)

            def predict(
                x: np.ndarray, w: np.ndarray = w, b: float = b, feats: Any = feats
            ) -> np.ndarray:
                return feats(x) @ w + b

            r2 = metrics.r2_score(val_quality, predict(val_inputs))
            if best is None or r2 > best[0]:
                best = (r2, name, alpha, predict)
    assert best is not None
    return best[1], best[2], best[3]


def run_e5_cell(
    zoo_dir: str, task: Task, model: str, spec: dict[str, Any], progress: SeedProgress | None = None
) -> dict[str, Any]:
    """Quality read through the task: ``model`` learns the zoo's membership labels (which topics
    a finetune was trained on) from the weights, and a ridge map from the true labels of the
    train split to quality turns its predicted probabilities into a quality estimate.

    Why: on minilm-topics a finetune's accuracy is mostly set by its topics (the true labels alone
    explain much of it), which a membership model reads from the weights far better than a
    regression head learns it from 800 scalar targets. The same map fed the true test labels is
    recorded as the ceiling of the approach (``oracle``)."""
    torch.set_num_threads(1)
    progress = progress or SeedProgress()
    zoo = Zoo.open(zoo_dir)
    stage1 = spec.get("stage1_task", "membership")
    train = load_task(zoo, "train", stage1)
    data = {
        "train": train,
        "val": load_task(zoo, "val", stage1, spec=train.batch.spec),
        "test": load_task(zoo, "test", stage1, spec=train.batch.spec),
    }
    quality = {
        split: np.array([quality_label(zoo.rows[i]) for i in d.ids]) for split, d in data.items()
    }
    _, _, oracle = task_to_quality(data["train"].y, quality["train"], data["val"].y, quality["val"])

    def one_seed(seed: int) -> dict[str, float]:
        result = fit(_config(stage1, model, seed, spec), data["train"], data["val"])
        prob = {
            split: to_user_units(stage1, predict_raw(result.model, data[split].batch),
                                 result.target_mean, result.target_std)
            for split in ("val", "test")
        }  # fmt: skip
        features, alpha, predict = task_to_quality(
            data["train"].y, quality["train"], prob["val"], quality["val"]
        )
        return {
            **metrics.regression_metrics(quality["test"], predict(prob["test"])),
            "membership_accuracy": metrics.per_label_accuracy(data["test"].y, prob["test"]),
            "ridge_alpha": alpha, "ridge_pairs": float(features == "labels+pairs"),
            "train_seconds": result.seconds, "best_epoch": float(result.best_epoch),
        }  # fmt: skip

    per_seed = [progress.run(seed, functools.partial(one_seed, seed)) for seed in spec["seeds"]]
    return {
        "stage1_task": stage1,
        "n_train": len(train),
        "n_val": len(data["val"]),
        "n_test": len(data["test"]),
        "oracle": metrics.regression_metrics(quality["test"], oracle(data["test"].y)),
        "per_seed": per_seed,
        "summary": summarise(per_seed),
    }


def headline(task: Task, summary: dict[str, dict[str, float]]) -> tuple[str, float, float]:
    key = {"quality": "r2", "harmful": "auroc", "membership": "per_label_accuracy"}[task]
    cell = summary.get(key, {"mean": float("nan"), "std": float("nan")})
    return key, cell["mean"], cell["std"]


def as_float(x: Any) -> float:
    return float(np.asarray(x))
