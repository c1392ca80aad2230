"""File bytes to a ``LoraBatch`` in a few array operations per module, for files sharing a layout.

Why: reading adapters one by one (``load_adapter``: parse, validate, build numpy factors module by
module, then pack) costs about a millisecond per small adapter, nearly all of it Python overhead,
100x the time to read its bytes. Uploads of one recipe share their safetensors header byte for byte
(same keys, shapes, dtypes, offsets), so a batch of them is validated once as a layout
(``lora_io.file_layout``: every check ``load_adapter`` makes) and then read as one (B, bytes) array:
per module one strided view, one conversion into the rank-major batch and one finite check, however
large B is. What differs per file, its numbers, is still checked per file (finite values; the size
is part of the layout).

The batch is exactly the one ``LoraBatch.from_adapters`` builds from ``load_adapter`` (tested bit
for bit). Files of one header may carry different adapter_config.json files (a zoo's or a hub's
uploads draw alpha per finetune): each file is scaled by its own. Files outside the fast path (a
scale read from alpha tensors, BF16 factors, a non-finite value, an invalid config) are read by
``load_adapter`` one by one, which raises the same error it always does.

    batch = read_batch([(adapter_bytes, config_bytes), ...], spec)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lora_io import FileLayout, LoraSpec, file_layout, load_adapter, scaled_up_factor
from lora_io.lora_adapter import CACHED_HEADER_BYTES
from lora_io.safetensors_header import TensorInfo
from models.lora_batch import LoraBatch, ShapeGroup, SpecMismatchError, from_rank_major, spec_groups

_FAST_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


def read_batch(
    items: Sequence[tuple[bytes, bytes | None]],
    spec: LoraSpec,
    *,
    dtype: torch.dtype = torch.float32,
) -> LoraBatch:
    """A ``LoraBatch`` of ``spec`` from (adapter bytes, adapter_config bytes or None) pairs, in order.

    Raises:
        LoraFileError: a file is invalid (the error ``load_adapter`` gives for it).
        SpecMismatchError: a valid file adapts other modules or shapes than ``spec``.
    """
    parts = read_batches(items, spec, dtype=dtype)
    if len(parts) == 1:
        return parts[0][1]
    order = [k for index, _ in parts for k in index]
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return LoraBatch.cat([batch for _, batch in parts]).select(inverse)


def read_batches(
    items: Sequence[tuple[bytes, bytes | None]],
    spec: LoraSpec,
    *,
    dtype: torch.dtype = torch.float32,
) -> list[tuple[list[int], LoraBatch]]:
    """The files grouped by layout (header, size, config), one batch per group with the indices
    of its files: a model run per group never pads a rank-4 adapter to a rank-16 neighbour's width.

    Raises:
        LoraFileError, SpecMismatchError: as :func:`read_batch`.
    """
    if not items:
        raise ValueError("read_batch needs at least one file")
    groups: dict[tuple[bytes, int, bool], list[int]] = {}
    for k, (data, config) in enumerate(items):
        groups.setdefault((_header_bytes(data), len(data), config is None), []).append(k)
    return [(index, _read_group(items, index, spec, dtype)) for index in groups.values()]


def _header_bytes(data: bytes) -> bytes:
    """The 8-byte length and the header it announces (or the first 16 bytes of a broken file)."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    return data[: 8 + n] if 8 + n <= min(len(data), 8 + CACHED_HEADER_BYTES) else data[:16]


def _read_group(
    all_items: Sequence[tuple[bytes, bytes | None]],
    index: list[int],
    spec: LoraSpec,
    dtype: torch.dtype,
) -> LoraBatch:
    items = [all_items[k] for k in index]
    first_data, first_config = items[0]
    layout = file_layout(first_data, first_config)
    if layout.spec == spec and _shares_layout(items, layout) and _fast_path_applies(layout):
        batch = _pack(items, layout, spec, dtype)
        if batch is not None:
            return batch
    adapters = [load_adapter(data, config=config) for data, config in items]
    for k, adapter in zip(index, adapters, strict=True):
        if adapter.spec != spec:
            raise SpecMismatchError(
                f"file {k} has spec fingerprint {adapter.spec.fingerprint}, expected "
                f"{spec.fingerprint} ({len(spec)} modules)"
            )
    return LoraBatch.from_adapters(adapters, spec, dtype=dtype)


def _shares_layout(items: Sequence[tuple[bytes, bytes | None]], layout: FileLayout) -> bool:
    """Every file has the first one's header bytes and size."""
    header = items[0][0][: layout.data_start]
    return all(
        len(data) == layout.file_size and data[: layout.data_start] == header for data, _ in items
    )


def _fast_path_applies(layout: FileLayout) -> bool:
    return layout.data_independent and all(
        f.a.dtype in _FAST_DTYPES and f.b.dtype in _FAST_DTYPES for f in layout.factors
    )


def _columns(raw: np.ndarray, info: TensorInfo) -> torch.Tensor:
    """Every file's copy of one tensor, (B, *shape), in its stored dtype (one contiguous copy).

    Why torch from here on: numpy converts and tests float16 element by element in software
    (measured here: 235 us to widen a (64, 4, 384) block, 105 us for ``isfinite`` on it); torch
    widens the same block in 31 us, and its float64 scaling and transposed copies are 2-3x numpy's.
    """
    view = raw[:, info.start : info.end].view(_FAST_DTYPES[info.dtype])
    # a copy (contiguous, writable): torch refuses read-only views of the bytes without a warning
    return torch.from_numpy(np.require(view, requirements=["C", "W"])).reshape(-1, *info.shape)


def _scaled_up(b: torch.Tensor, scale: np.ndarray) -> torch.Tensor:
    """(B, out, r) ``scale[k] * b[k]`` in float32, rounded as ``scaled_up_factor`` rounds it."""
    if np.all(scale == scale[0]):
        s = float(scale[0])
        if s == 1.0:
            return b.float()
        if float(np.float32(s)) == s:
            return b.float() * s  # a float32 tensor times an exact float32 scalar stays float32
    if b.dtype == torch.float64:  # rare; scaled_up_factor rounds float64 factors first where a
        # scale is exact in float32, so each file goes through it
        return torch.stack(
            [
                torch.from_numpy(scaled_up_factor(b[k].numpy(), float(s)))
                for k, s in enumerate(scale)
            ]
        )
    # float64 product of float32-exact values rounded once: what scaled_up_factor gives for any one
    return (b.double() * torch.from_numpy(scale)[:, None, None]).float()


def _pack(
    items: Sequence[tuple[bytes, bytes | None]],
    layout: FileLayout,
    spec: LoraSpec,
    dtype: torch.dtype,
) -> LoraBatch | None:
    """The batch, or None when a value is not finite (the caller then reads file by file)."""
    try:  # (B, modules): each file's own config; parsed once per distinct config
        by_config = {config: layout.scales_for(config) for _, config in items}
    except ValueError:
        return None
    scales = np.array([by_config[config] for _, config in items], dtype=np.float64)
    raw = np.frombuffer(b"".join(data[layout.data_start :] for data, _ in items), dtype=np.uint8)
    raw = raw.reshape(len(items), -1)  # (B, data bytes): one copy of all the factor bytes
    pack_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    groups = []
    for sg in spec_groups(spec):
        n, m, idx = sg.out_features, sg.in_features, sg.module_index
        ranks = [int(layout.factors[i].a.shape[0]) for i in idx]
        r = max(ranks)
        # Every entry is written below (values, or zeros where a module's rank is below the group's),
        # so the buffers start empty: zero-filling them first cost more than all the copies.
        Ut = torch.empty((len(idx), len(items), r, n), dtype=pack_dtype)  # (L_g, B, r, n)
        Vt = torch.empty((len(idx), len(items), r, m), dtype=pack_dtype)  # (L_g, B, r, m)
        for j, i in enumerate(idx):
            loc, rank = layout.factors[i], ranks[j]
            if rank < r:
                Ut[j, :, rank:] = 0
                Vt[j, :, rank:] = 0
            a = _columns(raw, loc.a).reshape(len(items), rank, m)  # (B, r, in): V^T as stored
            b = _columns(raw, loc.b).reshape(len(items), n, rank)  # (B, out, r)
            Vt[j, :, :rank] = a.float()  # as load_adapter: float32 (float64 factors rounded)
            Ut[j, :, :rank] = _scaled_up(b, scales[:, i]).transpose(1, 2)
        # Finite factors give finite packed values; a non-finite packed value (a NaN or inf in a
        # file, or a product past float32's range) sends the group to load_adapter, which gives
        # the file's own error or result.
        if not (np.isfinite(Ut.numpy()).all() and np.isfinite(Vt.numpy()).all()):
            return None
        group_ranks = torch.tensor([ranks] * len(items), dtype=torch.long)  # (B, L_g)
        U = from_rank_major(Ut.to(dtype))  # (B, L_g, n, r)
        V = from_rank_major(Vt.to(dtype))  # (B, L_g, m, r)
        groups.append(ShapeGroup(n, m, idx, U, V, group_ranks))
    return LoraBatch(spec, tuple(groups))
