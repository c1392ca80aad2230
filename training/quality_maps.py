"""Choosing how a quality-via-task predictor maps what it reads to quality, on validation only.

Why: the map that turns predicted task labels into quality is tiny next to the membership model,
and which one fits depends on the zoo. On causal-lm a ridge map on the task families is best
(validation R^2 0.80; trees 0.73); on minilm-topics quality also depends on how hard a finetune was
trained, not additively, and boosted trees on the topics plus each module's log delta norm reach
0.73 against the ridge map's 0.64. So ``loravet via-task`` fits every candidate on the train split
(true labels, as E5 does) and keeps the one with the best validation R^2 fed the membership model's
probabilities; the test split is never read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.boosted_trees import BoostedTrees
from models.quality_via_task import RIDGE_ALPHAS, fit_ridge, task_features
from training.metrics import r2_score

TREE_SETTINGS: dict[str, Any] = {"random_state": 0}
"""scikit-learn's defaults (100 trees of depth 3, learning rate 0.1), seeded: no tuning on val
beyond the choice between maps, which 100 validation LoRAs can support."""


@dataclass
class MapData:
    """One split's map inputs: label matrix (true on train, predicted on val), log norms, quality."""

    labels: np.ndarray  # (N, L_labels)
    log_norms: np.ndarray  # (N, L_modules)
    quality: np.ndarray  # (N,)


@dataclass
class ChosenMap:
    """The winning map and every candidate's validation R^2 (written into the predictor's meta)."""

    pairs: bool
    norm_features: bool
    val_r2: float
    norm_mean: np.ndarray
    norm_std: np.ndarray
    ridge: tuple[np.ndarray, float] | None = None  # (weights, intercept)
    ridge_alpha: float | None = None
    trees: BoostedTrees | None = None
    candidates: dict[str, float] = field(default_factory=dict)

    @property
    def map(self) -> str:
        """``"trees"`` when a tree map won, else ``"ridge"``."""
        return "trees" if self.trees is not None else "ridge"


def choose_quality_map(train: MapData, val: MapData) -> ChosenMap:
    """Fit ridge and tree maps, with and without the log norms, on ``train``; keep the best on ``val``."""
    from sklearn.ensemble import GradientBoostingRegressor

    mean, std = train.log_norms.mean(axis=0), train.log_norms.std(axis=0) + 1e-8

    def inputs(d: MapData, pairs: bool, norms: bool) -> np.ndarray:
        x = task_features(d.labels, pairs)
        return np.concatenate([x, (d.log_norms - mean) / std], axis=1) if norms else x

    best: ChosenMap | None = None
    candidates: dict[str, float] = {}
    for norms in (False, True):
        name = "+norms" if norms else ""
        ridge_best: tuple[float, bool, float, np.ndarray, float] | None = None
        for pairs in (False, True):
            for alpha in RIDGE_ALPHAS:
                w, b = fit_ridge(inputs(train, pairs, norms), train.quality, alpha)
                r2 = r2_score(val.quality, inputs(val, pairs, norms) @ w + b)
                if ridge_best is None or r2 > ridge_best[0]:
                    ridge_best = (r2, pairs, alpha, w, b)
        assert ridge_best is not None
        r2, pairs, alpha, w, b = ridge_best
        candidates[f"ridge{name}"] = r2
        if best is None or r2 > best.val_r2:
            best = ChosenMap(pairs, norms, r2, mean, std, (w, b), alpha)
        gbr = GradientBoostingRegressor(**TREE_SETTINGS).fit(
            inputs(train, False, norms), train.quality
        )
        r2 = r2_score(val.quality, gbr.predict(inputs(val, False, norms)))
        candidates[f"trees{name}"] = r2
        if r2 > best.val_r2:
            best = ChosenMap(False, norms, r2, mean, std, trees=BoostedTrees.from_sklearn(gbr))
    assert best is not None
    best.candidates = candidates
    return best
