"""Boosted trees held as tensors: scikit-learn's predictions, kept through a float32 cast and a
checkpoint, and the tree-mapped quality-via-task model GL(r)-invariant and reading the delta norms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.ensemble import GradientBoostingRegressor

from lora_io.lora_spec import LoraSpec
from models.boosted_trees import BoostedTrees, floor_float32
from models.model_catalog import build_model, fit_to_data
from models.predictor import Predictor, PredictorConfig, load_predictor, save_predictor
from models.quality_via_task import QualityViaTask, log_delta_norms
from models.symmetry import act_non_symmetry, gl_invariance_error
from models.synthetic_loras import random_lora_batch


def fitted_gbr(n_features: int, seed: int = 0) -> tuple[GradientBoostingRegressor, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, n_features)).astype(np.float32)
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, -1] + 0.1 * rng.normal(size=300)
    return GradientBoostingRegressor(random_state=0).fit(x, y), x


def test_trees_predict_what_scikit_learn_predicts_even_on_its_thresholds() -> None:
    gbr, x_train = fitted_gbr(5)
    trees = BoostedTrees.from_sklearn(gbr)
    # the training points lie next to every threshold: the float32 comparisons must agree there
    x = np.concatenate([x_train, np.random.default_rng(1).normal(size=(200, 5))]).astype(np.float32)
    np.testing.assert_allclose(trees(torch.from_numpy(x)).numpy(), gbr.predict(x), atol=1e-12)
    cast = trees.float()  # as a predictor cast to float32 casts it
    np.testing.assert_allclose(cast(torch.from_numpy(x)).numpy(), gbr.predict(x), atol=1e-5)
    with pytest.raises(ValueError, match="expected 5 features, got 4"):
        trees(torch.zeros(2, 4))


def test_floor_float32_is_the_largest_float32_not_above() -> None:
    values = np.array([0.1, -0.1, 1.0, 1e-30, 3.0000001])
    down = floor_float32(values)
    assert down.dtype == np.float32 and np.all(down.astype(np.float64) <= values)
    assert np.all(np.nextafter(down, np.float32(np.inf)).astype(np.float64) > values)


def tree_model(spec: LoraSpec, n_labels: int = 3) -> QualityViaTask:
    """A quality-via-task model with the log norms and a tree map fitted on random features."""
    width = n_labels + len(spec)
    gbr, _ = fitted_gbr(width, seed=2)
    trees = BoostedTrees.from_sklearn(gbr)
    hparams = {"inner": "gl_net", "inner_hparams": {"hidden": 8, "head_dim": 32},
               "n_labels": n_labels, "pairs": False, "norm_features": True, "map": "trees",
               "n_trees": trees.config.n_trees, "tree_nodes": trees.config.max_nodes,
               "tree_depth": trees.config.depth}  # fmt: skip
    model = build_model("quality_via_task", spec, 1, **hparams)
    assert isinstance(model, QualityViaTask)
    model.set_trees(trees)
    return model


def test_tree_mapped_quality_is_gl_invariant_and_reads_the_norms(small_spec: LoraSpec) -> None:
    batch = random_lora_batch(small_spec, 6, 4, seed=3, dtype=torch.float64)
    model = tree_model(small_spec).double().eval()
    fit_to_data(model, batch)
    norms = log_delta_norms(batch)
    model.set_norm_scaling(norms.mean(0).numpy(), norms.std(0).numpy() + 1e-3)
    with torch.no_grad():
        assert (
            model(batch).std() > 1e-3
        )  # the trees do split these inputs: invariance is not trivial
    for seed in range(3):
        assert gl_invariance_error(model, batch, seed=seed) < 1e-9
    # the norms are those of the dense deltas, and a change of one delta's scale moves its norm
    u, v = batch.groups[0].U[0, 0], batch.groups[0].V[0, 0]
    first = small_spec.shapes.index((batch.groups[0].out_features, batch.groups[0].in_features))
    assert torch.isclose(norms[0, first], torch.linalg.matrix_norm(u @ v.T).log(), rtol=1e-10)
    moved = act_non_symmetry(batch, "scale_u", module=2, generator=torch.Generator().manual_seed(5))
    changed = (log_delta_norms(moved) - norms).abs() > 1e-6
    assert changed[:, 2].all() and not changed[:, [0, 1, 3]].any()


def test_a_tree_mapped_predictor_round_trips_through_its_checkpoint(
    small_spec: LoraSpec, tmp_path: Path
) -> None:
    model = tree_model(small_spec).eval()
    config = PredictorConfig(
        predictor_id="q", version="1", task="quality", model_name="quality_via_task",
        hparams={**model.config.__dict__}, spec=small_spec, out_features=1, target_mean=[],
        target_std=[], threshold=None, label_names=["quality"], base_model="test/base",
    )  # fmt: skip
    save_predictor(Predictor(config, model, {}), tmp_path / "q")
    loaded = load_predictor(tmp_path / "q")
    batch = random_lora_batch(small_spec, 5, 4, seed=8)
    np.testing.assert_array_equal(
        loaded.predict(batch), Predictor(config, model, {}).predict(batch)
    )
    assert isinstance(loaded.model, QualityViaTask) and loaded.model.trees is not None
    assert loaded.model.trees.threshold.dtype == torch.float32
