"""GL-net: every layer equivariant, the model invariant, any rank, mixed ranks exact.

Symmetry: per module, (U_i, V_i) -> (U_i R_i, V_i R_i^{-T}) with R_i well conditioned (orthogonal
times diag(exp(uniform(-1, 1)))), checked in float64 to 1e-9 relative. The layers take and return
rank-major (L, B, r, h) features; the checks act on them in (B, L, h, r) order.
"""

from __future__ import annotations

import re

import pytest
import torch

from lora_io.lora_spec import LoraSpec, ModuleShape
from models.gl_layers import (
    GLDropout,
    GLHiddenBlock,
    GLHiddenLinear,
    GLInputLinear,
    GLInvariantHead,
    GLNonlinearity,
)
from models.gl_net import GLNet, GLNetConfig
from models.gl_net_reference import batch_major_forward
from models.lora_batch import LoraBatch, rank_major, spec_groups
from models.symmetry import (
    act_gl,
    act_non_symmetry,
    act_on_factors,
    gl_invariance_error,
    relative_change,
    sample_gl,
    sample_gl_like,
)
from models.synthetic_loras import random_lora_batch, random_lora_factors

TOL = 1e-9
B, L, H, R = 3, 4, 8, 5


def to_rank_major(t: torch.Tensor) -> torch.Tensor:
    return t.permute(1, 0, 3, 2).contiguous()  # (B, L, h, r) -> (L, B, r, h)


def to_batch_order(t: torch.Tensor) -> torch.Tensor:
    return t.permute(1, 0, 3, 2)  # (L, B, r, h) -> (B, L, h, r)


def in_batch_order(layer):
    """``layer`` as a map of (B, L, h, r) factors (it computes on rank-major ones)."""

    def apply(U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_u, out_v = layer(to_rank_major(U), to_rank_major(V))
        return to_batch_order(out_u), to_batch_order(out_v)

    return apply


def equivariance_error(layer, U: torch.Tensor, V: torch.Tensor, seed: int = 0) -> float:
    """max relative error of layer(U R, V R^-T) against layer(U, V) acted on by the same R."""
    g = torch.Generator().manual_seed(seed)
    Rm = sample_gl(*U.shape[:2], r=U.shape[-1], generator=g)
    apply = in_batch_order(layer)
    torch.manual_seed(1)  # same dropout masks on both sides in training mode
    out_u, out_v = act_on_factors(*apply(U, V), Rm)
    torch.manual_seed(1)
    moved_u, moved_v = apply(*act_on_factors(U, V, Rm))
    return max(relative_change(out_u, moved_u), relative_change(out_v, moved_v))


def trunk_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, L, H, R, generator=g, dtype=torch.float64),
        torch.randn(B, L, H, R, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize(
    "layer",
    [
        GLNonlinearity(),
        GLDropout(0.3).eval(),
        GLDropout(0.3).train(),
        GLHiddenLinear(L, H).double(),
        GLHiddenBlock(L, H, dropout=0.1).double().eval(),
    ],
    ids=[
        "nonlinearity",
        "dropout-eval",
        "dropout-train-same-mask",
        "hidden-linear",
        "hidden-block",
    ],
)
def test_layer_is_gl_equivariant(layer):
    assert equivariance_error(layer, *trunk_inputs()) < TOL


def test_nonlinearity_gates_are_those_of_the_dense_row_and_column_sums():
    U, V = trunk_inputs(1)
    M = U @ V.mT  # (B, L, h, h), formed here only to check the fast path
    gated_u, gated_v = in_batch_order(GLNonlinearity())(U, V)
    assert torch.equal(gated_u, U * (M.sum(-1, keepdim=True) > 0))
    assert torch.equal(gated_v, V * (M.sum(-2).unsqueeze(-1) > 0))
    assert 0 < int((gated_u == 0).all(-1).sum()) < B * L * H  # some rows gated, not all


def test_dropout_is_non_inverted_row_masking():
    U, V = trunk_inputs(2)
    drop = GLDropout(0.25)
    eval_u, _ = in_batch_order(drop.eval())(U, V)
    assert torch.allclose(eval_u, 0.75 * U)
    train_u, _ = in_batch_order(drop.train())(U, V)
    kept = (train_u == U).all(-1)  # (B, L, h): a row is kept whole or zeroed whole
    assert torch.all(kept | (train_u == 0).all(-1))


def test_input_layer_is_gl_equivariant(small_spec):
    batch = random_lora_batch(small_spec, B, R, seed=3, dtype=torch.float64)
    layer = GLInputLinear(small_spec, H).double()
    Rs = sample_gl_like(batch, torch.Generator().manual_seed(0))
    Rm = torch.empty(B, len(small_spec), R, R, dtype=torch.float64)  # spec order
    for g, Rg in zip(batch.groups, Rs, strict=True):
        Rm[:, list(g.module_index)] = Rg
    out_u, out_v = act_on_factors(*map(to_batch_order, layer(batch)), Rm)
    moved_u, moved_v = map(to_batch_order, layer(act_gl(batch, Rs)))
    assert max(relative_change(out_u, moved_u), relative_change(out_v, moved_v)) < TOL


def test_invariant_head_is_invariant():
    U, V = trunk_inputs(4)
    for pool in ("flatten", "mean", "norms"):
        head = GLInvariantHead(L, H, 32, 3, dropout=0.1, pool=pool).double().eval()
        Rm = sample_gl(B, L, r=R, generator=torch.Generator().manual_seed(5))
        moved = act_on_factors(U, V, Rm)
        assert (
            relative_change(
                head(to_rank_major(U), to_rank_major(V)),
                head(*map(to_rank_major, moved)),
            )
            < TOL
        )


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("pool", ["flatten", "mean", "norms"])
def test_gl_net_is_invariant_and_sensitive(small_spec, n_layers, pool):
    batch = random_lora_batch(small_spec, B, R, seed=6, dtype=torch.float64)
    model = GLNet(small_spec, 3, GLNetConfig(hidden=H, n_layers=n_layers, head_dim=32, pool=pool))
    model = model.double().eval()
    model.fit_to_data(batch)
    with torch.no_grad():
        assert gl_invariance_error(model, batch, seed=n_layers) < TOL
        if pool == "mean":  # (B, L) features: far less sensitive at init; invariance is the point
            return
        before = model(batch)
        for kind in ("scale_u", "same_r"):
            moved = act_non_symmetry(
                batch, kind, module=1, generator=torch.Generator().manual_seed(7)
            )
            assert relative_change(before, model(moved)) > 1e-3, kind


def test_nonlinearity_is_active_in_a_deep_gl_net(small_spec):
    """With >1 layer the gates must actually switch (else the test above proves little)."""
    batch = random_lora_batch(small_spec, B, R, seed=8, dtype=torch.float64)
    model = GLNet(small_spec, 1, GLNetConfig(hidden=H, n_layers=3)).double().eval()
    U, V = model.input_layer(batch)
    gated_u, _ = GLNonlinearity()(U, V)
    frac = float((gated_u == 0).all(-2).double().mean())  # a row of U_i is a column here
    assert 0.05 < frac < 0.95


def reference_gl_net(
    model: GLNet, factors: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """GL-net of one adapter, module by module with its own rank (no padding, no batching): the
    definition from the paper's code, written out to check the batched implementation."""
    where = {
        i: (gi, j)
        for gi, g in enumerate(spec_groups(model.spec))
        for j, i in enumerate(g.module_index)
    }
    p = model.config.dropout
    feats = []
    for i, (U, V) in enumerate(factors):
        gi, j = where[i]
        root = model.input_scale[i].sqrt()
        U, V = (
            model.input_layer.P[gi][j] @ U / root,
            model.input_layer.Q[gi][j] @ V / root,
        )  # (h, r_i)
        for block in model.blocks:
            M = U @ V.T  # (h, h)
            U, V = U * (M.sum(1, keepdim=True) > 0), V * (M.sum(0).unsqueeze(1) > 0)
            U, V = U * (1 - p), V * (1 - p)
            U, V = block.linear.A[i] @ U, block.linear.B[i] @ V
        feats.append((U @ V.T).flatten())
    head = model.head
    x = head.norm(head.linear1(torch.cat(feats)))
    return head.linear2(torch.relu(x))


def test_mixed_ranks_in_one_batch_match_the_unpadded_per_module_reference(small_spec):
    ranks = [[1, 4, 7, 2], [6, 1, 3, 5], [2, 2, 2, 2]]
    factors = random_lora_factors(small_spec, ranks, seed=9, dtype=torch.float64)
    batch = LoraBatch.from_factors(small_spec, factors, dtype=torch.float64)
    model = GLNet(small_spec, 2, GLNetConfig(hidden=H, n_layers=3, head_dim=32)).double().eval()
    model.fit_to_data(batch)
    with torch.no_grad():
        out = model(batch)
        for b in range(len(ranks)):
            assert relative_change(reference_gl_net(model, factors[b]), out[b]) < 1e-12
        assert relative_change(out, model(batch.pad_rank(20))) < 1e-12  # more zero columns: same
        assert relative_change(out[1:2], model(batch.select([1]))) < 1e-12  # padding of others


def test_one_instance_runs_every_rank_from_1_to_64():
    spec = LoraSpec((ModuleShape("a", 96, 64), ModuleShape("b", 64, 96), ModuleShape("c", 96, 64)))
    model = GLNet(spec, 2, GLNetConfig(hidden=H, n_layers=2, head_dim=32)).double().eval()
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for r in (1, 2, 3, 8, 16, 33, 64):
            batch = random_lora_batch(spec, 2, r, seed=r, dtype=torch.float64)
            out = model(batch)
            assert out.shape == (2, 2) and torch.isfinite(out).all()
            assert gl_invariance_error(model, batch, seed=r) < TOL
        mixed = random_lora_batch(spec, 2, [[1, 64, 5], [64, 2, 33]], seed=0, dtype=torch.float64)
        assert torch.isfinite(model(mixed)).all()
    assert sum(p.numel() for p in model.parameters()) == n_params  # rank never enters a parameter


def test_gl_net_never_forms_a_dense_delta():
    """100k x 100k modules: one dense delta would be 40 GB in float32; GL-net needs a few MB."""
    spec = LoraSpec(
        (ModuleShape("big.a", 100_000, 100_000), ModuleShape("big.b", 100_000, 100_000))
    )
    batch = random_lora_batch(spec, 2, 4, seed=0)
    model = GLNet(spec, 1, GLNetConfig(hidden=4, n_layers=2, head_dim=8)).eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch)).all()


def test_fitted_input_scale_is_the_median_delta_norm(small_spec):
    batch = random_lora_batch(small_spec, 5, 3, seed=10, dtype=torch.float64)
    model = GLNet(small_spec, 1).double()
    model.fit_to_data(batch)
    for i in range(len(small_spec)):
        U, V = batch.module(i)
        norms = torch.linalg.matrix_norm(U @ V.mT)  # dense here only to check
        assert torch.isclose(model.input_scale[i], norms.median(), rtol=1e-12)
    assert torch.all(GLNet(small_spec, 1, GLNetConfig(input_norm="none")).input_scale == 1)


@pytest.mark.parametrize(
    ("field", "value"), [("hidden", 0), ("n_layers", 0), ("dropout", 1.0), ("pool", "max")]
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=f"Invalid {field}"):
        GLNetConfig(**{field: value})


@pytest.mark.parametrize(
    "layer",
    [GLInputLinear, GLNonlinearity, GLDropout, GLHiddenLinear, GLHiddenBlock, GLInvariantHead],
)
def test_every_layer_states_the_group_action_it_respects(layer):
    doc = layer.__doc__ or ""
    assert re.search(
        r"(Equivariant|Invariant) to ``\(U(_i)?, V(_i)?\) -> \(U(_i)? R(_i)?, V(_i)? R(_i)?\^\{-T\}\)``",
        doc,
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("pool", ["flatten", "mean", "norms"])
def test_rank_major_layout_equals_the_batch_major_computation(small_spec, dtype, n_layers, pool):
    """Same outputs and same gradients (what training sees) as before the layout change, on mixed
    ranks and several shape groups, to float round-off."""
    ranks = [[1, 4, 7, 2], [6, 1, 3, 5], [2, 2, 2, 2], [4, 4, 4, 4], [3, 8, 1, 1]]
    factors = random_lora_factors(small_spec, ranks, seed=11, dtype=dtype, std=0.1)
    batch = LoraBatch.from_factors(small_spec, factors, dtype=dtype)
    config = GLNetConfig(hidden=H, n_layers=n_layers, head_dim=32, pool=pool)
    model = GLNet(small_spec, 3, config).to(dtype).eval()
    model.fit_to_data(batch)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    out, reference = model(batch), batch_major_forward(model, batch)
    assert relative_change(reference, out) < tol
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(reference.square().sum(), list(model.parameters()))
    for grad, ref_grad in zip(grads, ref_grads, strict=True):
        assert relative_change(ref_grad, grad) < tol * 10


def test_batches_are_stored_rank_major_so_the_batch_is_one_matrix_per_module(small_spec):
    """Every way of making a batch keeps (L_g, B, r, n) storage: GL-net's first layer then reads
    the factors in place (no copy) as one (B r, n) matrix per module."""
    batch = random_lora_batch(small_spec, 6, [[1, 4, 2, 3]] * 6, seed=12)
    made = {
        "from_factors": batch,
        "select": batch.select([4, 0, 2]),
        "slice": batch.select(slice(1, 5)),
        "cat": LoraBatch.cat([batch.select([1]), batch]),
        "pad_rank": batch.pad_rank(9),
        "to": batch.to(torch.float64),
    }
    for name, b in made.items():
        for g in b.groups:
            for x in (g.U, g.V):
                assert rank_major(x).data_ptr() == x.data_ptr(), name
    assert torch.equal(made["select"].groups[0].U, batch.groups[0].U[[4, 0, 2]])
    assert torch.equal(made["slice"].groups[1].V, batch.groups[1].V[1:5])
