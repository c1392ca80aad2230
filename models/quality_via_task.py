"""``quality_via_task``: quality read through the task a finetune was trained on (E5, shipped).

Why: on minilm-topics a finetune's held-out accuracy is mostly set by which topics it learned
(the true topics alone explain R^2 0.47 of test quality), and a membership model reads the topics
from the weights far better (per-label accuracy 0.95) than a regression head learns quality from
800 scalar targets (GL-net direct R^2 0.10; through the task 0.30, E5). So this predictor is a
membership model followed by a fixed ridge map from the membership probabilities (and their
pairwise products: two topics can be harder together than either alone) to quality.

The ridge map is fitted on the true membership labels of the zoo's train split, its features and
penalty chosen by R^2 on the validation split fed the membership model's probabilities
(:func:`fit_task_map`); it is stored as buffers, so a checkpoint carries it. The model is as
GL(r)-invariant as its membership model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


@dataclass(frozen=True)
class QualityViaTaskConfig:
    """The membership model (catalog name, its hyperparameters, label count) and the feature map."""

    inner: str = "gl_net"
    inner_hparams: dict[str, Any] = field(default_factory=dict)
    n_labels: int = 1
    pairs: bool = True

    def __post_init__(self) -> None:
        if self.n_labels < 1:
            raise ValueError(f"Invalid n_labels: {self.n_labels!r} (must be >= 1)")
        if self.inner == "quality_via_task":
            raise ValueError("Invalid inner: 'quality_via_task' cannot wrap itself")


def task_features(probs: torch.Tensor | np.ndarray, pairs: bool) -> Any:
    """(N, L) label probabilities -> (N, L) or (N, L + L(L-1)/2) with pairwise products."""
    if not pairs:
        return probs
    n = probs.shape[1]
    i, j = np.triu_indices(n, k=1)
    if isinstance(probs, torch.Tensor):
        return torch.cat([probs, probs[:, i] * probs[:, j]], dim=1)
    return np.concatenate([probs, probs[:, i] * probs[:, j]], axis=1)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Closed-form ridge with an unpenalised intercept: (weights, intercept)."""
    mx, my = x.mean(axis=0), y.mean()
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, float(my - mx @ w)


def fit_task_map(
    train_labels: np.ndarray,
    train_quality: np.ndarray,
    val_probs: np.ndarray,
    val_quality: np.ndarray,
) -> tuple[bool, float, np.ndarray, float, float]:
    """(pairs, alpha, weights, intercept, val R^2): the map with the best validation R^2."""
    best: tuple[float, bool, float, np.ndarray, float] | None = None
    ss_tot = float(np.sum((val_quality - val_quality.mean()) ** 2))
    for pairs in (False, True):
        for alpha in RIDGE_ALPHAS:
            w, b = fit_ridge(task_features(train_labels, pairs), train_quality, alpha)
            pred = task_features(val_probs, pairs) @ w + b
            r2 = 1.0 - float(np.sum((val_quality - pred) ** 2)) / ss_tot if ss_tot else -math.inf
            if best is None or r2 > best[0]:
                best = (r2, pairs, alpha, w, b)
    assert best is not None
    r2, pairs, alpha, w, b = best
    return pairs, alpha, w, b, r2


class QualityViaTask(nn.Module):
    """Membership probabilities -> task features -> linear (ridge) map -> (B, out); quality: out 1."""

    ridge_w: torch.Tensor  # (F, out) buffer
    ridge_b: torch.Tensor  # (out,) buffer

    def __init__(
        self, spec: LoraSpec, out_features: int = 1, config: QualityViaTaskConfig | None = None
    ) -> None:
        super().__init__()
        from models.model_catalog import build_model  # the catalog imports this module

        self.spec, self.out_features = spec, out_features
        self.config = config = config or QualityViaTaskConfig()
        self.inner = build_model(config.inner, spec, config.n_labels, **config.inner_hparams)
        n = config.n_labels
        width = n + n * (n - 1) // 2 if config.pairs else n
        self.register_buffer("ridge_w", torch.zeros(width, out_features))  # (F, out)
        self.register_buffer("ridge_b", torch.zeros(out_features))  # (out,)

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        probs = torch.sigmoid(self.inner(batch))  # (B, L)
        feats = task_features(probs, self.config.pairs)  # (B, F)
        return feats @ self.ridge_w.to(feats.dtype) + self.ridge_b.to(feats.dtype)  # (B, out)

    @torch.no_grad()
    def set_task_map(self, weights: np.ndarray, intercept: float | np.ndarray) -> None:
        """Install a fitted map: weights (F,) or (F, out), intercept scalar or (out,)."""
        w = torch.as_tensor(np.asarray(weights), dtype=self.ridge_w.dtype)
        self.ridge_w.copy_(w.reshape(self.ridge_w.shape))
        self.ridge_b.copy_(
            torch.as_tensor(np.asarray(intercept), dtype=self.ridge_b.dtype).expand_as(self.ridge_b)
        )
