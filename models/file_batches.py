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


def _columns(raw: np.ndarray, info: TensorInfo) -> np.ndarray:
    """Every file's copy of one tensor, (B, *shape), as a view of the (B, bytes) buffer."""
    return raw[:, info.start : info.end].view(_FAST_DTYPES[info.dtype]).reshape(-1, *info.shape)


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
    pack_dtype = np.float64 if dtype == torch.float64 else np.float32
    groups = []
    for sg in spec_groups(spec):
        n, m, idx = sg.out_features, sg.in_features, sg.module_index
        ranks = [int(layout.factors[i].a.shape[0]) for i in idx]
        r = max(ranks)
        Ut = np.zeros((len(idx), len(items), r, n), dtype=pack_dtype)  # (L_g, B, r, n)
        Vt = np.zeros((len(idx), len(items), r, m), dtype=pack_dtype)  # (L_g, B, r, m)
        for j, i in enumerate(idx):
            loc, rank = layout.factors[i], ranks[j]
            a = _columns(raw, loc.a).reshape(len(items), rank, m)  # (B, r, in): V^T as stored
            b = _columns(raw, loc.b).reshape(len(items), n, rank)  # (B, out, r)
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                return None
            Vt[j, :, :rank] = a
            scale = scales[:, i]  # (B,)
            if np.all(scale == scale[0]):
                up = scaled_up_factor(b, float(scale[0]))
            else:  # float64 product rounded once: what scaled_up_factor gives for any one scale
                up = (b.astype(np.float64) * scale[:, None, None]).astype(np.float32)
            Ut[j, :, :rank] = up.transpose(0, 2, 1)
        group_ranks = torch.tensor([ranks] * len(items), dtype=torch.long)  # (B, L_g)
        U = from_rank_major(torch.from_numpy(Ut).to(dtype))  # (B, L_g, n, r)
        V = from_rank_major(torch.from_numpy(Vt).to(dtype))  # (B, L_g, m, r)
        groups.append(ShapeGroup(n, m, idx, U, V, group_ranks))
    return LoraBatch(spec, tuple(groups))
