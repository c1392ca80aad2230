"""E1 and E2 cells: train a model on a zoo task for several seeds and measure it on held-out splits."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np
import torch

from training.train_loop import TrainConfig, fit, predict_raw, task_metrics, to_user_units
from training.zoo_dataset import Zoo, load_task


def _config(task: str, model: str, seed: int, spec: dict[str, Any]) -> TrainConfig:
    train = {**spec["train"], **spec["models"][model].get("train", {})}
    return TrainConfig(
        task=task, model=model, seed=seed, hparams=spec["models"][model].get("hparams", {}), **train
    )


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


def run_e1_cell(zoo_dir: str, task: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    zoo = Zoo.open(zoo_dir)
    train = load_task(zoo, "train", task)
    val = load_task(zoo, "val", task, spec=train.batch.spec)
    test = load_task(zoo, "test", task, spec=train.batch.spec)
    per_seed = []
    for seed in spec["seeds"]:
        result = fit(_config(task, model, seed, spec), train, val)
        pred = to_user_units(
            task, predict_raw(result.model, test.batch), result.target_mean, result.target_std
        )
        per_seed.append({**task_metrics(task, test.y, pred, result.threshold), "train_seconds": result.seconds,
                         "best_epoch": float(result.best_epoch)})  # fmt: skip
    return {
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "per_seed": per_seed,
        "summary": summarise(per_seed),
    }


def run_e2_cell(zoo_dir: str, task: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    zoo = Zoo.open(zoo_dir)
    train = load_task(zoo, spec["train_split"], task)
    val = load_task(zoo, spec["val_split"], task, spec=train.batch.spec)
    tests = {}
    for r in spec["test_ranks"]:
        name = f"rank_generalisation/test/{r}"
        if name in zoo.splits:
            tests[r] = load_task(zoo, name, task, spec=train.batch.spec)
    per_seed = []
    for seed in spec["seeds"]:
        result = fit(_config(task, model, seed, spec), train, val)
        by_rank = {}
        for r, data in tests.items():
            pred = to_user_units(
                task, predict_raw(result.model, data.batch), result.target_mean, result.target_std
            )
            by_rank[str(r)] = task_metrics(task, data.y, pred, result.threshold)
        per_seed.append(by_rank)
    summary = {r: summarise([s[r] for s in per_seed]) for r in per_seed[0]}
    return {"n_train": len(train), "test_sizes": {str(r): len(d) for r, d in tests.items()}, "per_seed": per_seed,
            "summary": summary}  # fmt: skip


def headline(task: str, summary: dict[str, dict[str, float]]) -> tuple[str, float, float]:
    key = {"quality": "r2", "harmful": "auroc", "membership": "per_label_accuracy"}[task]
    cell = summary.get(key, {"mean": float("nan"), "std": float("nan")})
    return key, cell["mean"], cell["std"]


def as_float(x: Any) -> float:
    return float(np.asarray(x))
