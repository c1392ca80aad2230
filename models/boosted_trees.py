"""Gradient-boosted regression trees held as tensors, so a checkpoint can carry them without pickle.

Why: on minilm-topics a finetune's quality depends on which topics it learned *and* on how hard it
was trained, and not additively (a weak topic pair costs more when the finetune is short). A ridge
map on the predicted topics reaches validation R^2 0.64; boosted trees on the topics and the
per-module delta norms 0.73 (test 0.48 against 0.25). scikit-learn fits the trees; this module
stores them as flat node arrays (safetensors buffers, read back bit for bit) and evaluates them in
torch, so the worker needs neither scikit-learn at predict time nor a pickled estimator.

Every tree is padded to ``max_nodes``; a leaf points to itself, so descending ``depth`` times from
the root ends on the leaf whatever the path length. Features are compared as float32, as
scikit-learn does (it casts inputs to float32 before walking a tree), against each threshold rounded
down to float32: for a float32 ``x``, ``x <= t`` and ``x <= floor32(t)`` agree, so predictions match
scikit-learn's and survive the model being cast to float32 with the rest of a predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


def floor_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 value."""
    out = np.asarray(values, dtype=np.float64).astype(np.float32)
    above = out.astype(np.float64) > values
    out[above] = np.nextafter(out[above], np.float32(-np.inf))
    return out


@dataclass(frozen=True)
class BoostedTreesConfig:
    """The shape of the stored ensemble: buffers are sized from it before a checkpoint is loaded."""

    n_trees: int
    max_nodes: int
    depth: int
    n_features: int

    def __post_init__(self) -> None:
        for name in ("n_trees", "max_nodes", "depth", "n_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} (must be >= 1)")


class BoostedTrees(nn.Module):
    """``init + sum_t value_t(leaf reached by x)``: (B, n_features) -> (B,)."""

    feature: torch.Tensor  # (T, N) int64, the split feature (0 at a leaf)
    threshold: torch.Tensor  # (T, N) float32, go left when float32(x[feature]) <= threshold
    left: torch.Tensor  # (T, N) int64, a leaf's children are itself
    right: torch.Tensor  # (T, N) int64
    value: torch.Tensor  # (T, N) float64, the leaf's contribution (learning rate included)
    init: torch.Tensor  # () float64, the prediction before any tree

    def __init__(self, config: BoostedTreesConfig) -> None:
        super().__init__()
        self.config = config
        shape = (config.n_trees, config.max_nodes)
        self.register_buffer("feature", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(shape, dtype=torch.float32))
        self.register_buffer("left", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("right", torch.zeros(shape, dtype=torch.long))
        self.register_buffer("value", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("init", torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.config.n_features:
            raise ValueError(f"expected {self.config.n_features} features, got {x.shape[-1]}")
        xs = x.detach().to(torch.float32)  # (B, F): scikit-learn's float32 view
        b, t = xs.shape[0], self.config.n_trees
        trees = torch.arange(t).expand(b, t)  # (B, T)
        node = torch.zeros(b, t, dtype=torch.long)  # (B, T), every tree at its root
        for _ in range(self.config.depth):
            feat = self.feature[trees, node]  # (B, T)
            go_left = xs.gather(1, feat) <= self.threshold[trees, node].to(torch.float32)  # (B, T)
            node = torch.where(go_left, self.left[trees, node], self.right[trees, node])
        return self.init.double() + self.value[trees, node].double().sum(dim=1)  # (B,) float64

    @classmethod
    def from_sklearn(cls, estimator: Any) -> BoostedTrees:
        """Copy a fitted ``sklearn.ensemble.GradientBoostingRegressor`` (squared error loss)."""
        trees = [stage[0].tree_ for stage in estimator.estimators_]
        config = BoostedTreesConfig(
            n_trees=len(trees),
            max_nodes=max(tree.node_count for tree in trees),
            depth=max(max(tree.max_depth for tree in trees), 1),
            n_features=int(estimator.n_features_in_),
        )
        model = cls(config)
        rate = float(estimator.learning_rate)
        with torch.no_grad():
            for k, tree in enumerate(trees):
                n = tree.node_count
                own = np.arange(n)
                leaf = tree.children_left == -1
                model.feature[k, :n] = torch.from_numpy(np.where(leaf, 0, tree.feature))
                model.threshold[k, :n] = torch.from_numpy(
                    floor_float32(np.where(leaf, 0.0, tree.threshold))
                )
                model.left[k, :n] = torch.from_numpy(np.where(leaf, own, tree.children_left))
                model.right[k, :n] = torch.from_numpy(np.where(leaf, own, tree.children_right))
                model.value[k, :n] = torch.from_numpy(rate * tree.value[:, 0, 0])
            model.init.fill_(float(np.asarray(estimator.init_.constant_).reshape(-1)[0]))
        return model
