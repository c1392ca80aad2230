"""The quality map is chosen on validation: ridge where quality is linear in the task, boosted
trees on the task and the delta norms where it depends on both together."""

from __future__ import annotations

import numpy as np

from training.quality_maps import MapData, choose_quality_map


def split(rng: np.random.Generator, n: int, rule: str, predicted: bool) -> MapData:
    labels = (rng.random((n, 12)) < 0.3).astype(np.float64)
    norms = rng.normal(size=(n, 3))
    if rule == "linear":  # every task family adds its own share: additive, which trees fit poorly
        quality = 0.2 + 0.05 * labels @ np.linspace(-1.0, 1.0, 12)
    else:  # a topic pays off only when the finetune trained hard (a large first-module norm)
        quality = 0.5 + 0.3 * labels[:, 0] * (norms[:, 0] > 0) - 0.1 * labels[:, 1]
    quality = quality + 0.01 * rng.normal(size=n)
    if predicted:  # val reads the membership model's probabilities, not the true labels
        labels = np.clip(labels + 0.05 * rng.normal(size=labels.shape), 0, 1)
    return MapData(labels, norms, quality)


def test_ridge_for_a_linear_task_rule_trees_and_norms_for_an_interaction() -> None:
    rng = np.random.default_rng(0)
    linear = choose_quality_map(split(rng, 300, "linear", False), split(rng, 100, "linear", True))
    assert linear.map == "ridge" and not linear.norm_features and linear.ridge is not None
    assert linear.val_r2 > 0.9
    assert set(linear.candidates) == {"ridge", "trees", "ridge+norms", "trees+norms"}
    both = choose_quality_map(split(rng, 300, "both", False), split(rng, 100, "both", True))
    assert both.map == "trees" and both.norm_features and both.trees is not None
    assert both.val_r2 > both.candidates["ridge"] + 0.2
    assert both.trees.config.n_features == 12 + 3
