"""Fit one predictor on one task: AdamW, minibatches, validation-based model selection.

The loop is the same for every model: GL-net and the baselines all take a ``LoraBatch``. Options
that only make sense for some models are explicit: ``augment_gl`` applies a fresh random GL(r)
element per module to every training minibatch (free new examples for non-invariant baselines; a
no-op in exact arithmetic for invariant ones).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from models import build_model
from models.lora_batch import LoraBatch
from models.symmetry import act_gl, sample_gl_like
from training import metrics
from training.zoo_dataset import Task, TaskData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; written into the checkpoint's meta.json."""

    task: Task
    model: str
    seed: int = 0
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-2
    augment_gl: bool = False
    patience: int = 15  # epochs without validation improvement before stopping
    hparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("quality", "harmful", "membership"):
            raise ValueError(f"Invalid task: {self.task!r}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r}")
        if self.lr <= 0:
            raise ValueError(f"Invalid lr: {self.lr!r}")


@dataclass
class FitResult:
    model: nn.Module
    target_mean: np.ndarray
    target_std: np.ndarray
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float
    threshold: float | None
    val_metrics: dict[str, float]


def _loss_fn(task: Task) -> nn.Module:
    return nn.MSELoss() if task == "quality" else nn.BCEWithLogitsLoss()


def predict_raw(model: nn.Module, batch: LoraBatch, chunk: int = 512) -> torch.Tensor:
    """Model outputs in training units (normalised values or logits), in eval mode, no grad."""
    model.eval()
    with torch.no_grad():
        return torch.cat(
            [model(batch.select(slice(i, i + chunk))) for i in range(0, len(batch), chunk)]
        )


def to_user_units(task: Task, raw: torch.Tensor, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    out = raw.double().numpy()
    if task == "quality":
        return out * std + mean
    return 1.0 / (1.0 + np.exp(-out))


def task_metrics(
    task: Task, y: np.ndarray, pred: np.ndarray, threshold: float | None
) -> dict[str, float]:
    if task == "quality":
        return metrics.regression_metrics(y[:, 0], pred[:, 0])
    if task == "harmful":
        return metrics.harmful_metrics(y[:, 0], pred[:, 0], 0.5 if threshold is None else threshold)
    return {"per_label_accuracy": metrics.per_label_accuracy(y, pred)}


def fit(config: TrainConfig, train: TaskData, val: TaskData) -> FitResult:
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    out_features = train.y.shape[1]
    model = build_model(config.model, train.batch.spec, out_features, **config.hparams)
    fit_to_data = getattr(model, "fit_to_data", None)  # models with fitted input statistics
    if fit_to_data is not None:
        fit_to_data(train.batch)
    if config.task == "quality":
        mean, std = train.y.mean(0), train.y.std(0) + 1e-8
    else:
        mean, std = np.zeros(out_features), np.ones(out_features)
    y_train = torch.as_tensor((train.y - mean) / std, dtype=torch.float32)
    y_val = torch.as_tensor((val.y - mean) / std, dtype=torch.float32)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = (
        torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        if params
        else None
    )
    loss_fn = _loss_fn(config.task)
    best = (float("inf"), -1, copy.deepcopy(model.state_dict()))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    n = len(train)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        if optimiser is not None:
            for i in range(0, n, config.batch_size):
                idx = order[i : i + config.batch_size]
                if len(idx) < 2 and n >= 2:
                    continue  # LayerNorm/BatchStats on one sample is noise
                mb = train.batch.select(idx)
                if config.augment_gl:
                    mb = act_gl(mb, sample_gl_like(mb, gen))
                loss = loss_fn(model(mb), y_train[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.item() * len(idx)
        val_loss = float(loss_fn(predict_raw(model, val.batch), y_val))
        history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss})
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    seconds = time.perf_counter() - start
    val_pred = to_user_units(config.task, predict_raw(model, val.batch), mean, std)
    threshold = choose_threshold(config.task, train.y, val.y, val_pred)
    return FitResult(
        model,
        mean,
        std,
        best[1],
        history,
        seconds,
        threshold,
        task_metrics(config.task, val.y, val_pred, threshold),
    )


def choose_threshold(
    task: Task, y_train: np.ndarray, y_val: np.ndarray, val_pred: np.ndarray
) -> float | None:
    """The decision threshold a report compares the prediction against.

    harmful: the probability that maximises validation accuracy. quality: the 10th percentile of the
    training zoo's measured quality, so "below threshold" means "worse than 90% of known finetunes".
    membership: none (0.5 per label).
    """
    if task == "harmful":
        return metrics.best_accuracy_threshold(y_val[:, 0], val_pred[:, 0])
    if task == "quality":
        return float(np.percentile(y_train[:, 0], 10))
    return None


def config_json(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)
