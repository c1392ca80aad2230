"""Baselines: exact GL invariance where the paper claims it, O(r)-only for O-Align, none for the
raw-factor models, and every model sensitive to a change of one module's delta."""

from __future__ import annotations

import pytest
import torch

from lora_io.lora_spec import LoraSpec, ModuleShape
from models.dense_mlp import DenseMemoryError, dense_memory_bytes
from models.lora_spectrum import lora_singular_values
from models.model_catalog import GL_INVARIANT_MODELS, MODEL_CATALOG, build_model, fit_to_data
from models.norm_stats import spectral_statistics
from models.symmetry import act_non_symmetry, gl_invariance_error, relative_change
from models.synthetic_loras import random_lora_batch

TOL = 1e-9
RAW_RANK = {"max_rank": 5}  # models reading raw factors pad to a fixed rank
HPARAMS = {
    "gl_net": {"hidden": 8, "head_dim": 32},
    "mlp": {**RAW_RANK, "hidden": 32},
    "mlp_dense": {},
    "mlp_svd": {**RAW_RANK, "hidden": 32},
    "mlp_oalign": {**RAW_RANK, "hidden": 32},
    "transformer": {**RAW_RANK, "d_model": 32, "n_heads": 4, "ff_dim": 32},
    "norm_stats": {},
    "gl_net_ensemble": {"members": 2, "hidden": 8, "head_dim": 32},
    "w2t": {**RAW_RANK, "d_model": 32, "n_heads": 4, "ff_dim": 32},
    "quality_via_task": {
        "inner": "gl_net",
        "inner_hparams": {"hidden": 8, "head_dim": 32},
        "n_labels": 4,
    },
    "family_ensemble": {
        "members": [
            {"family": "gl_net", "model": "gl_net", "hparams": {"hidden": 8, "head_dim": 32}},
            {"family": "mlp_dense", "model": "mlp_dense", "hparams": {}},
        ],
    },
    "token_scan": {},
}
OUT_FEATURES = {"token_scan": 1}
SCALE_FREE = {"token_scan"}
"""Models that read only how a delta's response is shaped, never its size."""
"""Models that give one harmful score only; the others are built with 3 outputs."""


def fitted_model(name, spec, batch):
    model = build_model(name, spec, OUT_FEATURES.get(name, 3), **HPARAMS[name]).double().eval()
    fit_to_data(model, batch)
    if hasattr(model, "set_task_map"):  # quality_via_task: a fitted map, not the zero one
        model.set_task_map(
            torch.randn(model.ridge_w.shape, generator=torch.Generator().manual_seed(0)), 0.1
        )
    return model


def test_hparams_cover_the_catalog():
    assert set(HPARAMS) == set(MODEL_CATALOG)


@pytest.mark.parametrize("name", GL_INVARIANT_MODELS)
def test_gl_invariant_models(small_spec, name):
    batch = random_lora_batch(small_spec, 4, 5, seed=1, dtype=torch.float64)
    model = fitted_model(name, small_spec, batch)
    for seed in range(3):
        assert gl_invariance_error(model, batch, seed=seed) < TOL


def test_oalign_is_invariant_to_orthogonal_r_only(small_spec):
    batch = random_lora_batch(small_spec, 4, 5, seed=2, dtype=torch.float64)
    model = fitted_model("mlp_oalign", small_spec, batch)
    assert gl_invariance_error(model, batch, orthogonal=True) < TOL
    assert gl_invariance_error(model, batch) > 1e-3


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_raw_factor_models_are_not_invariant(small_spec, name):
    batch = random_lora_batch(small_spec, 4, 5, seed=3, dtype=torch.float64)
    model = fitted_model(name, small_spec, batch)
    assert gl_invariance_error(model, batch, orthogonal=True) > 1e-3


@pytest.mark.parametrize("name", list(MODEL_CATALOG))
@pytest.mark.parametrize("kind", ["scale_u", "same_r"])
def test_every_model_is_sensitive_to_a_non_symmetry(small_spec, name, kind):
    if kind == "scale_u" and name in SCALE_FREE:
        pytest.skip(
            f"{name} is invariant to a module's delta scale by design (tested in its own file)"
        )
    batch = random_lora_batch(small_spec, 4, 5, seed=4, dtype=torch.float64)
    model = fitted_model(name, small_spec, batch)
    moved = act_non_symmetry(batch, kind, module=2, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert relative_change(model(batch), model(moved)) > 1e-3


@pytest.mark.parametrize("name", GL_INVARIANT_MODELS)
def test_zero_padding_is_exact_for_gl_invariant_models(small_spec, name):
    batch = random_lora_batch(
        small_spec, 3, [[1, 4, 2, 3], [5, 1, 3, 2], [2, 2, 5, 5]], seed=6, dtype=torch.float64
    )
    model = fitted_model(name, small_spec, batch)
    with torch.no_grad():
        out = model(batch)
        assert relative_change(out, model(batch.pad_rank(9))) < 1e-12
        for b in range(3):
            assert relative_change(out[b : b + 1], model(batch.select([b]))) < 1e-12


def test_singular_values_from_qr_match_the_dense_delta():
    g = torch.Generator().manual_seed(7)
    U, V = (
        torch.randn(3, 30, 4, generator=g, dtype=torch.float64),
        torch.randn(3, 20, 4, generator=g, dtype=torch.float64),
    )
    dense = torch.linalg.svdvals(U @ V.mT)[..., :4]
    assert torch.allclose(lora_singular_values(U, V), dense, rtol=1e-10, atol=1e-12)


def test_spectral_statistics_of_a_known_spectrum():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    Q1 = torch.linalg.qr(torch.randn(12, 4, dtype=torch.float64)).Q
    Q2 = torch.linalg.qr(torch.randn(10, 4, dtype=torch.float64)).Q
    stats = spectral_statistics(Q1 * s, Q2, torch.tensor(4))
    e = s**2 / (s**2).sum()
    unit = s / 4
    dev = unit - unit.mean()
    expected = [
        torch.log(s[0]),
        0.5 * torch.log((s**2).sum()),
        e[0],
        -(e * e.log()).sum(),
        (dev**4).mean() / (dev**2).mean() ** 2,
    ]
    assert torch.allclose(stats, torch.stack(expected), rtol=1e-10)
    # a rank-1 adapter: kurtosis 0, a single singular value holds all the energy
    one = spectral_statistics(Q1[:, :1] * 3, Q2[:, :1], torch.tensor(1))
    assert torch.allclose(one[2:], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_dense_memory_is_computed_before_forming_anything(small_spec):
    per_adapter = sum(n * m for n, m in small_spec.shapes)
    assert dense_memory_bytes(small_spec, 8, torch.float32) == 8 * per_adapter * 4
    assert dense_memory_bytes(small_spec, 8, torch.float64) == 8 * per_adapter * 8
    cap = dense_memory_bytes(small_spec, 4, torch.float32)
    model = build_model("mlp_dense", small_spec, 1, hidden=2, max_dense_bytes=cap).eval()
    model(random_lora_batch(small_spec, 4, 2))  # exactly at the cap: fine
    with pytest.raises(DenseMemoryError, match=r"above max_dense_bytes") as err:
        model(random_lora_batch(small_spec, 5, 2))
    assert isinstance(err.value, MemoryError) and isinstance(err.value, ValueError)


def test_dense_model_refuses_a_huge_spec_at_construction():
    spec = LoraSpec((ModuleShape("big", 100_000, 100_000),))
    with pytest.raises(DenseMemoryError, match=r"596.05 GiB"):
        build_model("mlp_dense", spec, 1)
    assert dense_memory_bytes(spec, 1) == 4 * 10**10


def test_raw_factor_models_refuse_ranks_above_max_rank(small_spec):
    model = build_model("mlp", small_spec, 1, max_rank=2)
    with pytest.raises(ValueError, match="max_rank=2"):
        model(random_lora_batch(small_spec, 2, 3))


def test_oalign_needs_a_template(small_spec):
    model = build_model("mlp_oalign", small_spec, 1, max_rank=4)
    with pytest.raises(RuntimeError, match="set_template"):
        model(random_lora_batch(small_spec, 2, 3))


def test_build_model_rejects_unknown_names_and_hparams(small_spec):
    with pytest.raises(ValueError, match="known"):
        build_model("resnet", small_spec, 1)
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['width'\]"):
        build_model("gl_net", small_spec, 1, width=3)
