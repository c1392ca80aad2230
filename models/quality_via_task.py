"""``quality_via_task``: quality read through the task a finetune was trained on (E5, shipped).

Why: on minilm-topics a finetune's held-out accuracy is mostly set by which topics it learned
(the true topics alone explain R^2 0.47 of test quality), and a membership model reads the topics
from the weights far better (per-label accuracy 0.95) than a regression head learns quality from
800 scalar targets (GL-net direct R^2 0.10; through the task 0.30, E5). So this predictor is a
membership model followed by a fixed ridge map from the membership probabilities (and their
pairwise products: two topics can be harder together than either alone) to quality.

The ridge map is fitted on the true membership labels of the zoo's train split, its features and
penalty chosen by R^2 on the validation split fed the membership model's probabilities
(``training/quality_maps.py``); it is stored as buffers, so a checkpoint carries it. The model is as
GL(r)-invariant as its membership model.

Two options, each chosen on validation by ``loravet via-task`` (``training/quality_maps.py``):
``norm_features`` adds the log Frobenius norm of every module's delta (how hard the finetune was
trained, which the topics alone do not say; GL(r)-invariant, from r x r Gram matrices), and
``map="trees"`` replaces the ridge map by gradient-boosted trees (:mod:`models.boosted_trees`), for
quality that depends on the topics and the training intensity together, not additively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.boosted_trees import BoostedTrees, BoostedTreesConfig
from models.lora_batch import LoraBatch, group_to_spec_order

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 13))


@dataclass(frozen=True)
class QualityViaTaskConfig:
    """The membership model (catalog name, its hyperparameters, label count) and the feature map."""

    inner: str = "gl_net"
    inner_hparams: dict[str, Any] = field(default_factory=dict)
    n_labels: int = 1
    pairs: bool = True
    norm_features: bool = False
    map: Literal["ridge", "trees"] = "ridge"
    n_trees: int = 0  # the shape of a tree map (see ``BoostedTreesConfig``); 0 for a ridge map
    tree_nodes: int = 0
    tree_depth: int = 0

    def __post_init__(self) -> None:
        if self.n_labels < 1:
            raise ValueError(f"Invalid n_labels: {self.n_labels!r} (must be >= 1)")
        if self.inner == "quality_via_task":
            raise ValueError("Invalid inner: 'quality_via_task' cannot wrap itself")
        if self.map not in ("ridge", "trees"):
            raise ValueError(f"Invalid map: {self.map!r} (accepted: 'ridge', 'trees')")
        if self.map == "trees" and min(self.n_trees, self.tree_nodes, self.tree_depth) < 1:
            raise ValueError("a tree map needs n_trees, tree_nodes and tree_depth >= 1")

    def n_features(self, n_modules: int) -> int:
        """Width of the map's input: labels (and their pairs), then one log norm per module."""
        n = self.n_labels
        width = n + n * (n - 1) // 2 if self.pairs else n
        return width + (n_modules if self.norm_features else 0)


def log_delta_norms(batch: LoraBatch) -> torch.Tensor:
    """(B, L) log ||U_i V_i^T||_F of every module, in spec order: ``||U V^T||_F^2`` is the sum of
    ``(U^T U) * (V^T V)``, r x r Grams, so no delta is formed; invariant to GL(r) per module."""
    parts = []
    for g in batch.groups:
        gram_u = g.U.transpose(-1, -2) @ g.U  # (B, L_g, r, r)
        gram_v = g.V.transpose(-1, -2) @ g.V  # (B, L_g, r, r)
        sq = (gram_u * gram_v).sum(dim=(-1, -2))  # (B, L_g)
        parts.append(0.5 * torch.log(sq.clamp_min(torch.finfo(sq.dtype).tiny)))
    order = group_to_spec_order(batch.spec).to(parts[0].device)
    return torch.cat(parts, dim=1).index_select(1, order)  # (B, L)


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


class QualityViaTask(nn.Module):
    """Membership probabilities (and log delta norms) -> ridge or tree map -> (B, out); quality: out 1."""

    ridge_w: torch.Tensor  # (F, out) buffer
    ridge_b: torch.Tensor  # (out,) buffer
    norm_mean: torch.Tensor  # (L,) buffer: train-split mean of the log norms (norm_features only)
    norm_std: torch.Tensor  # (L,) buffer

    def __init__(
        self, spec: LoraSpec, out_features: int = 1, config: QualityViaTaskConfig | None = None
    ) -> None:
        super().__init__()
        from models.model_catalog import build_model  # the catalog imports this module

        self.spec, self.out_features = spec, out_features
        self.config = config = config or QualityViaTaskConfig()
        self.inner = build_model(config.inner, spec, config.n_labels, **config.inner_hparams)
        width = config.n_features(len(spec))
        self.trees: BoostedTrees | None = None
        if config.map == "trees":
            if out_features != 1:
                raise ValueError("a tree map predicts one value (out_features=1)")
            self.trees = BoostedTrees(
                BoostedTreesConfig(config.n_trees, config.tree_nodes, config.tree_depth, width)
            )
        else:
            self.register_buffer("ridge_w", torch.zeros(width, out_features))  # (F, out)
            self.register_buffer("ridge_b", torch.zeros(out_features))  # (out,)
        if config.norm_features:
            self.register_buffer("norm_mean", torch.zeros(len(spec)))  # (L,)
            self.register_buffer("norm_std", torch.ones(len(spec)))  # (L,)

    def map_inputs(self, batch: LoraBatch) -> torch.Tensor:
        """(B, F): the membership probabilities (and pairs), then the standardised log norms."""
        probs = torch.sigmoid(self.inner(batch))  # (B, L_labels)
        feats = task_features(probs, self.config.pairs)  # (B, F_task)
        if self.config.norm_features:
            norms = log_delta_norms(batch).to(feats.dtype)  # (B, L_modules)
            mean, std = self.norm_mean.to(feats.dtype), self.norm_std.to(feats.dtype)
            feats = torch.cat([feats, (norms - mean) / std], dim=1)
        return feats

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        feats = self.map_inputs(batch)  # (B, F)
        if self.trees is not None:
            return self.trees(feats).to(feats.dtype).unsqueeze(1)  # (B, 1)
        return feats @ self.ridge_w.to(feats.dtype) + self.ridge_b.to(feats.dtype)  # (B, out)

    @torch.no_grad()
    def set_norm_scaling(self, mean: np.ndarray, std: np.ndarray) -> None:
        """Install the train split's log-norm mean and standard deviation, (L,) each."""
        self.norm_mean.copy_(torch.as_tensor(np.asarray(mean), dtype=self.norm_mean.dtype))
        self.norm_std.copy_(torch.as_tensor(np.asarray(std), dtype=self.norm_std.dtype))

    @torch.no_grad()
    def set_trees(self, trees: BoostedTrees) -> None:
        """Install a fitted tree map of the configured shape."""
        assert self.trees is not None and trees.config == self.trees.config, trees.config
        self.trees.load_state_dict(trees.state_dict())

    @torch.no_grad()
    def set_task_map(self, weights: np.ndarray, intercept: float | np.ndarray) -> None:
        """Install a fitted map: weights (F,) or (F, out), intercept scalar or (out,)."""
        w = torch.as_tensor(np.asarray(weights), dtype=self.ridge_w.dtype)
        self.ridge_w.copy_(w.reshape(self.ridge_w.shape))
        self.ridge_b.copy_(
            torch.as_tensor(np.asarray(intercept), dtype=self.ridge_b.dtype).expand_as(self.ridge_b)
        )
