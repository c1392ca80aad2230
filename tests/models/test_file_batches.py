"""``read_batch``: file bytes to the very batch ``load_adapter`` + ``from_adapters`` would build."""

from __future__ import annotations

import json
import struct
import warnings

import numpy as np
import pytest
import torch

from harness.lora_files import adapter_config, peft_adapter, safetensors_bytes
from lora_io import errors as E
from lora_io import load_adapter
from models import file_batches
from models.file_batches import read_batch
from models.lora_batch import LoraBatch, SpecMismatchError, rank_major


def _reference(
    items: list[tuple[bytes, bytes | None]], dtype: torch.dtype = torch.float32
) -> LoraBatch:
    adapters = [load_adapter(data, config=config) for data, config in items]
    return LoraBatch.from_adapters(adapters, adapters[0].spec, dtype=dtype)


def _assert_identical(got: LoraBatch, want: LoraBatch) -> None:
    assert got.spec == want.spec
    for g, w in zip(got.groups, want.groups, strict=True):
        assert torch.equal(g.U, w.U) and torch.equal(g.V, w.V) and torch.equal(g.ranks, w.ranks)
        assert rank_major(g.U).data_ptr() == g.U.data_ptr()  # stored rank-major, as GL-net reads it


@pytest.mark.parametrize("stored", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("rank", "alpha"), [(4, 8.0), (3, 5.0)])  # scale 2 (exact), 5/3 (not)
def test_files_sharing_a_layout_read_bit_for_bit_as_load_adapter_does(
    stored: type[np.floating],
    dtype: torch.dtype,
    rank: int,
    alpha: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = adapter_config(rank=rank, alpha=alpha)
    items = [
        (peft_adapter(seed=k, layers=3, hidden=48, rank=rank, dtype=stored), config)
        for k in range(6)
    ]
    want = _reference(items, dtype)

    def file_by_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("the shared layout should have been read as one array")

    monkeypatch.setattr(file_batches, "load_adapter", file_by_file)
    _assert_identical(read_batch(items, want.spec, dtype=dtype), want)


def test_files_of_one_header_with_their_own_configs_are_each_scaled_by_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A zoo's or a hub's uploads draw alpha per finetune: same header, other scale."""
    for stored in (np.float16, np.float32, np.float64):
        items = [
            (
                peft_adapter(seed=k, layers=2, hidden=40, rank=3, dtype=stored),
                adapter_config(rank=3, alpha=alpha),
            )
            for k, alpha in enumerate([5.0, 7.0, 6.0, 5.0])  # scales 5/3, 7/3 (inexact), 2 (exact)
        ]
        _assert_read_as_one_array(items, monkeypatch)


def _assert_read_as_one_array(
    items: list[tuple[bytes, bytes | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    want = _reference(items)

    def file_by_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("one header: the files should have been read as one array")

    monkeypatch.setattr(file_batches, "load_adapter", file_by_file)
    _assert_identical(read_batch(items, want.spec), want)


def test_files_of_other_layouts_fall_back_to_file_by_file_reading() -> None:
    items = [
        (peft_adapter(seed=1, rank=4), adapter_config(rank=4)),
        (peft_adapter(seed=2, rank=2), adapter_config(rank=2)),  # another header
        (peft_adapter(seed=3, rank=4), None),  # no config: scale 1
    ]
    _assert_identical(read_batch(items, _reference(items).spec), _reference(items))


def test_a_bad_file_in_a_shared_layout_raises_what_load_adapter_raises() -> None:
    good = peft_adapter(seed=4)
    start = 8 + struct.unpack("<Q", good[:8])[0]
    nan = good[:start] + np.float32(np.nan).tobytes() + good[start + 4 :]
    with pytest.raises(E.NonFiniteWeightsError, match="NaN"):
        read_batch([(good, None), (nan, None)], load_adapter(good).spec)
    half = peft_adapter(seed=4, dtype=np.float16)  # float16 is widened before it is checked
    end = len(half) - 2  # the last value of the last tensor
    inf = half[:end] + np.float16(np.inf).tobytes()
    with pytest.raises(E.NonFiniteWeightsError):
        read_batch([(half, None), (inf, None)], load_adapter(half).spec)
    with pytest.raises(E.HeaderError, match="truncated"):
        read_batch([(good, None), (good[:-4], None)], load_adapter(good).spec)


def test_a_file_of_another_spec_is_refused_by_name() -> None:
    small, big = peft_adapter(seed=5, layers=2), peft_adapter(seed=6, layers=3)
    with pytest.raises(SpecMismatchError, match="file 1"):
        read_batch([(small, None), (big, None)], load_adapter(small).spec)


def test_modules_of_lower_rank_are_zero_padded_as_from_adapters_pads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rank_pattern gives one module rank 2 beside rank-4 ones: its padding columns are zeros,
    whatever the packing buffer held before (it is allocated without zero-filling)."""
    config = json.dumps(
        {
            "peft_type": "LORA",
            "r": 4,
            "lora_alpha": 8,
            "rank_pattern": {"layer.0.attention.self.query": 2},
        }
    ).encode()

    def adapter(seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        tensors = {}
        for i in range(2):
            for proj in ("query", "value"):
                base = f"base_model.model.encoder.layer.{i}.attention.self.{proj}"
                rank = 2 if (i, proj) == (0, "query") else 4
                tensors[f"{base}.lora_A.weight"] = rng.normal(size=(rank, 24)).astype(np.float16)
                tensors[f"{base}.lora_B.weight"] = rng.normal(size=(24, rank)).astype(np.float16)
        return safetensors_bytes(tensors)

    for _ in range(3):  # fresh buffers each time: garbage left by the allocator must not show
        _assert_read_as_one_array([(adapter(k), config) for k in range(5)], monkeypatch)
        monkeypatch.undo()


def test_a_batch_of_one_file_reads_without_warnings() -> None:
    """One file's tensors are contiguous views of read-only bytes: packed without torch's
    non-writable-array warning (which a worker's log would repeat for every job)."""
    data = peft_adapter(seed=9, dtype=np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_batch([(data, None)], load_adapter(data).spec)
    _assert_identical(got, _reference([(data, None)]))
