"""LoraBatch: grouping by shape, free ranks with exact zero padding, dtype/device moves, spec checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lora_io.lora_adapter import LoraAdapter, LoraModule
from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch, SpecMismatchError, spec_groups
from models.synthetic_loras import random_lora_batch, random_lora_factors


def make_adapter(spec: LoraSpec, ranks: list[int], seed: int) -> LoraAdapter:
    """A LoraAdapter as lora_io returns it (float32 numpy factors), without writing a file."""
    rng = np.random.default_rng(seed)
    modules = tuple(
        LoraModule(
            m.name,
            rng.standard_normal((m.out_features, r)).astype(np.float32),
            rng.standard_normal((m.in_features, r)).astype(np.float32),
            scale=1.0,
            alpha=None,
            kind="linear",
        )
        for m, r in zip(spec.modules, ranks, strict=True)
    )
    return LoraAdapter("peft", modules, "assumed", "0" * 64, 0, ("F32",))


def test_groups_follow_shapes_in_order_of_first_appearance(small_spec):
    groups = spec_groups(small_spec)
    assert [(g.out_features, g.in_features, g.module_index) for g in groups] == [
        (24, 16, (0, 2)),
        (16, 24, (1,)),
        (20, 12, (3,)),
    ]


def test_from_adapters_pads_mixed_ranks_with_zeros_and_keeps_deltas(small_spec):
    adapters = [
        make_adapter(small_spec, [1, 3, 4, 2], 0),
        make_adapter(small_spec, [5, 2, 1, 3], 1),
    ]
    batch = LoraBatch.from_adapters(adapters, dtype=torch.float64)
    assert batch.batch_size == 2 and batch.dtype == torch.float64 and batch.spec == small_spec
    g0 = batch.groups[0]
    assert tuple(g0.U.shape) == (2, 2, 24, 5) and tuple(g0.V.shape) == (2, 2, 16, 5)
    assert batch.ranks.tolist() == [[1, 3, 4, 2], [5, 2, 1, 3]]
    for b, adapter in enumerate(adapters):
        for i, mod in enumerate(adapter.modules):
            U, V = batch.module(i)
            assert torch.all(U[b, :, mod.rank :] == 0) and torch.all(V[b, :, mod.rank :] == 0)
            delta = (U[b] @ V[b].T).numpy()
            np.testing.assert_allclose(delta, mod.delta(), rtol=1e-12, atol=1e-12)


def test_from_adapters_refuses_another_spec(small_spec, other_spec):
    adapters = [make_adapter(small_spec, [2] * 4, 0), make_adapter(other_spec, [2, 2], 1)]
    with pytest.raises(SpecMismatchError, match=other_spec.fingerprint):
        LoraBatch.from_adapters(adapters)


def test_module_tensors_and_factors_constructors_agree(small_spec):
    factors = random_lora_factors(small_spec, [[3] * 4] * 2, seed=1)
    Us = [torch.stack([factors[b][i][0] for b in range(2)]) for i in range(4)]
    Vs = [torch.stack([factors[b][i][1] for b in range(2)]) for i in range(4)]
    a = LoraBatch.from_module_tensors(small_spec, Us, Vs)
    b = LoraBatch.from_factors(small_spec, factors)
    for ga, gb in zip(a.groups, b.groups, strict=True):
        assert (
            torch.equal(ga.U, gb.U) and torch.equal(ga.V, gb.V) and torch.equal(ga.ranks, gb.ranks)
        )


def test_constructor_reports_wrong_shapes(small_spec):
    factors = random_lora_factors(small_spec, [[2] * 4], seed=0)
    factors[0][1] = (factors[0][1][0], torch.zeros(7, 2))
    with pytest.raises(ValueError, match=r"module 1 \(layers.0.o_proj\)"):
        LoraBatch.from_factors(small_spec, factors)


def test_to_dtype_select_cat_and_pad_rank(small_spec):
    batch = random_lora_batch(small_spec, 4, 2, seed=0)
    assert batch.to(torch.float64).dtype == torch.float64
    assert batch.to(dtype=torch.float16).groups[1].V.dtype == torch.float16
    assert batch.to("cpu").device.type == "cpu"
    sub = batch.select([3, 1])
    assert torch.equal(sub.groups[2].U, batch.groups[2].U[[3, 1]])
    wide = random_lora_batch(small_spec, 1, 5, seed=1)
    both = LoraBatch.cat([batch, wide])
    assert both.batch_size == 5 and both.max_rank == 5
    assert both.ranks[:, 0].tolist() == [2, 2, 2, 2, 5]
    padded = batch.pad_rank(9)
    assert padded.max_rank == 9 and torch.equal(padded.ranks, batch.ranks)
    assert torch.equal(padded.groups[0].U[..., :2], batch.groups[0].U)


def test_stacked_trims_padding_but_refuses_real_rank_above_max(small_spec):
    batch = random_lora_batch(small_spec, 2, 3, seed=0).pad_rank(10)
    assert tuple(batch.groups[0].stacked(4).shape) == (2, 2, 40, 4)
    with pytest.raises(ValueError, match="rank 3"):
        batch.groups[0].stacked(2)
