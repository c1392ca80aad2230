"""``LoraAdapter``: the canonical factors of a validated LoRA file, ready for any model.

For every adapted module i: ``U_i = scale_i * B_i`` (out x r) and ``V_i = A_i^T`` (in x r), so that
``U_i @ V_i.T`` is exactly the weight delta the adapter applies. Conv factors are flattened
(``down [r, in, kh, kw] -> A [r, in*kh*kw]``, ``up [out, r, 1, 1] -> B [out, r]``).

Reading uses only numpy on the validated byte layout: no torch, no native parser on untrusted input,
and never an unpickler.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import numpy as np

from lora_io.adapter_config import AdapterConfig, parse_adapter_config
from lora_io.base_models import BaseModel, recognise_base_model
from lora_io.errors import (
    AdapterConfigError,
    FileTooLargeError,
    NonFiniteWeightsError,
    RankMismatchError,
    UnsupportedDtypeError,
)
from lora_io.key_grammar import KeyLayout, LoraFormat, ModuleKeys, parse_keys
from lora_io.lora_spec import LoraSpec, ModuleShape
from lora_io.safetensors_header import (
    MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    check_file_size,
    header_length,
    parse_header,
)

MAX_FILE_BYTES = 1 << 30
"""Largest adapter file accepted (1 GiB): an SD 1.5 kohya LoRA at rank 128 in float32 is ~300 MB."""

FACTOR_DTYPES = ("F16", "BF16", "F32", "F64")
"""Dtypes accepted for LoRA factors."""

ScaleSource = Literal["adapter_config", "alpha_keys", "metadata_config", "kohya_default", "assumed"]

_NUMPY_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


@dataclass(frozen=True)
class LoraModule:
    """One adapted module in canonical form. ``U``: (out, r), ``V``: (in, r), float32."""

    name: str
    U: np.ndarray
    V: np.ndarray
    scale: float
    alpha: float | None
    kind: Literal["linear", "conv"]
    kernel: tuple[int, int] | None = None

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.U.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.V.shape[0])

    def delta(self) -> np.ndarray:
        """The dense (out, in) weight delta ``U V^T`` (for conv: flattened over in*kh*kw)."""
        return self.U.astype(np.float64) @ self.V.astype(np.float64).T

    def singular_values(self) -> np.ndarray:
        """All singular values of ``U V^T`` (largest first), never forming the delta: QR of each
        factor, then the SVD of the r x r product of the R factors. Empty when a factor is empty
        or not finite. (``models.lora_spectrum`` does the same batched in torch for the models;
        this one is for torch-free code: the report pages' plots.)"""
        u = np.asarray(self.U, dtype=np.float64)
        v = np.asarray(self.V, dtype=np.float64)
        if u.size == 0 or v.size == 0 or not (np.isfinite(u).all() and np.isfinite(v).all()):
            return np.zeros(0)
        r_u = cast(np.ndarray, np.linalg.qr(u, mode="r"))  # mode "r": the R factor alone
        r_v = cast(np.ndarray, np.linalg.qr(v, mode="r"))
        return np.linalg.svd(r_u @ r_v.T, compute_uv=False)


@dataclass(frozen=True)
class LoraAdapter:
    """A validated adapter: format, modules in natural name order, and where its scale came from."""

    format: LoraFormat
    modules: tuple[LoraModule, ...]
    scale_source: ScaleSource
    sha256: str
    size_bytes: int
    dtypes: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    config: AdapterConfig | None = None
    adapter_name: str | None = None

    @functools.cached_property
    def spec(self) -> LoraSpec:
        """Computed once: the worker and the predictors ask for it per adapter many times."""
        return LoraSpec(
            tuple(ModuleShape(m.name, m.out_features, m.in_features) for m in self.modules)
        )

    @property
    def base_model(self) -> BaseModel:
        return recognise_base_model(self.spec)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(m.rank for m in self.modules)

    def module(self, name: str) -> LoraModule:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)


def load_adapter(
    source: str | Path | bytes,
    config: str | Path | bytes | AdapterConfig | None = None,
    *,
    allow_non_finite: bool = False,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> LoraAdapter:
    """Validate and read a LoRA safetensors file (path or bytes) into canonical factors.

    Args:
        source: a path to the ``.safetensors`` file, or its bytes.
        config: the adapter's ``adapter_config.json`` (path, bytes or parsed), when there is one.
        allow_non_finite: keep NaN/Inf factors (for reporting them as a failed check) instead of raising.

    Raises:
        LoraFileError: any subclass, with a message that says what is wrong and what is accepted.
    """
    if isinstance(source, (str, Path)):
        size = Path(source).stat().st_size
        if size > max_file_bytes:
            raise FileTooLargeError(
                f"file is {size:,} bytes; adapters are accepted up to {max_file_bytes:,} bytes"
            )
        data = Path(source).read_bytes()
    else:
        data = bytes(source)
    if len(data) > max_file_bytes:
        raise FileTooLargeError(
            f"file is {len(data):,} bytes; adapters are accepted up to {max_file_bytes:,} bytes"
        )
    header, layout = _header_and_layout(data, max_header_bytes)
    cfg = _resolve_config(config, header, layout)
    modules = tuple(
        _read_module(data, header, keys, layout.format, cfg, allow_non_finite)
        for keys in layout.modules
    )
    if cfg is not None:
        source_kind: ScaleSource = "adapter_config" if config is not None else "metadata_config"
    elif any(k.alpha for k in layout.modules):
        source_kind = "alpha_keys"
    elif layout.format == "kohya":
        source_kind = "kohya_default"
    else:
        source_kind = "assumed"
    used = sorted({header.tensors[k].dtype for mk in layout.modules for k in (mk.a, mk.b)})
    return LoraAdapter(
        format=layout.format,
        modules=modules,
        scale_source=source_kind,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        dtypes=tuple(used),
        metadata=dict(header.metadata),
        config=cfg,
        adapter_name=layout.adapter_name,
    )


def check_adapter(
    path: str | Path,
    config: bytes | None = None,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> None:
    """Validate a LoRA file on disk exactly as :func:`load_adapter` does, without building its factors.

    For a server that must refuse bad files before storing them but has no use for ``U``/``V``: the
    file is memory-mapped instead of read, no float copies are made and nothing is hashed, so
    checking is several times cheaper than loading and its memory is the page cache, not the heap.

    Raises:
        LoraFileError: the same subclass and message :func:`load_adapter` raises for this file.
    """
    p = Path(path)
    size = p.stat().st_size
    if size > max_file_bytes:
        raise FileTooLargeError(
            f"file is {size:,} bytes; adapters are accepted up to {max_file_bytes:,} bytes"
        )
    if size < 16:  # too small to map usefully; the header parser says what is wrong
        load_adapter(p.read_bytes(), config=config, max_header_bytes=max_header_bytes)
        return
    with p.open("rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    # no context manager: arrays still viewing the map (say, in a traceback) would make close() fail;
    # the map goes when the last reference does
    view = memoryview(mapped)
    n = header_length(bytes(view[:16]), max_header_bytes=max_header_bytes)
    header = parse_header(bytes(view[: 8 + n]), size, max_header_bytes=max_header_bytes)
    layout = parse_keys(header.tensors)
    cfg = _resolve_config(config, header, layout)
    for keys in layout.modules:
        _module_factors(view, header, keys, layout.format, cfg, False)


CACHED_HEADER_BYTES = 1 << 16
"""Headers up to this size are parsed once per distinct header (see ``_header_and_layout``)."""


def _header_and_layout(data: bytes, max_header_bytes: int) -> tuple[SafetensorsHeader, KeyLayout]:
    """The validated header and key layout of ``data``, a whole file.

    Uploads of one recipe share their header byte for byte (same keys, shapes, dtypes, offsets),
    and parsing it (JSON, then the key grammar) is most of the cost of reading a small adapter, so
    small headers are parsed once and looked up by their bytes; the file's size is still checked
    against the header every time. Errors are never cached: a bad header raises on every read.
    """
    n = header_length(data[:16], max_header_bytes=max_header_bytes)
    if n > CACHED_HEADER_BYTES or len(data) < 8 + n:
        header = parse_header(data, len(data), max_header_bytes=max_header_bytes)
        return header, parse_keys(header.tensors)
    prefix = data[: 8 + n]
    header = _parse_header_bytes(prefix, max_header_bytes)
    check_file_size(header, len(data))  # before the keys, in the order an uncached read checks
    return header, _parse_keys_of(prefix, max_header_bytes)


@functools.lru_cache(maxsize=64)
def _parse_header_bytes(prefix: bytes, max_header_bytes: int) -> SafetensorsHeader:
    return parse_header(prefix, None, max_header_bytes=max_header_bytes)


@functools.lru_cache(maxsize=64)
def _parse_keys_of(prefix: bytes, max_header_bytes: int) -> KeyLayout:
    return parse_keys(_parse_header_bytes(prefix, max_header_bytes).tensors)


def _resolve_config(
    config: str | Path | bytes | AdapterConfig | None, header: SafetensorsHeader, layout: KeyLayout
) -> AdapterConfig | None:
    if isinstance(config, AdapterConfig):
        return config
    if isinstance(config, (str, Path)):
        return parse_adapter_config(Path(config).read_bytes())
    if isinstance(config, bytes):
        return parse_adapter_config(config)
    # newer diffusers embed the LoRA config in the safetensors metadata
    embedded = header.metadata.get("lora_adapter_metadata")
    if embedded and layout.format in ("diffusers", "peft"):
        try:
            doc = json.loads(embedded)
        except json.JSONDecodeError:
            raise AdapterConfigError(
                "metadata field lora_adapter_metadata is not valid JSON"
            ) from None
        if isinstance(doc, dict) and "r" in doc:
            return parse_adapter_config(json.dumps(doc))
    return None


def _read_tensor(
    data: bytes | memoryview, header: SafetensorsHeader, info: TensorInfo
) -> np.ndarray:
    if info.dtype not in FACTOR_DTYPES:
        raise UnsupportedDtypeError(
            f"tensor {info.name!r} has dtype {info.dtype}; LoRA factors are accepted as {', '.join(FACTOR_DTYPES)}"
        )
    raw = data[header.data_start + info.start : header.data_start + info.end]
    if info.dtype == "BF16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        arr = bits.view(np.float32)
    else:
        arr = np.frombuffer(raw, dtype=_NUMPY_DTYPES[info.dtype])
    return arr.reshape(info.shape)


def _read_alpha(data: bytes | memoryview, header: SafetensorsHeader, key: str) -> float:
    info = header.tensors[key]
    if info.numel != 1:
        raise RankMismatchError(
            f"alpha tensor {key!r} has shape {list(info.shape)}; a single scalar is accepted"
        )
    if info.dtype in FACTOR_DTYPES:
        value = float(_read_tensor(data, header, info).reshape(-1)[0])
    elif info.dtype in ("I64", "I32", "I16", "U8"):
        np_dtype = {"I64": "<i8", "I32": "<i4", "I16": "<i2", "U8": "u1"}[info.dtype]
        value = float(
            np.frombuffer(
                data[header.data_start + info.start : header.data_start + info.end], dtype=np_dtype
            )[0]
        )
    else:
        raise UnsupportedDtypeError(
            f"alpha tensor {key!r} has dtype {info.dtype}; a float or integer scalar is accepted"
        )
    if not math.isfinite(value):
        raise NonFiniteWeightsError(f"alpha tensor {key!r} is {value}; a finite scalar is accepted")
    return value


def _read_module(
    data: bytes,
    header: SafetensorsHeader,
    keys: ModuleKeys,
    fmt: LoraFormat,
    cfg: AdapterConfig | None,
    allow_non_finite: bool,
) -> LoraModule:
    a, b, kind, kernel, alpha, scale = _module_factors(
        data, header, keys, fmt, cfg, allow_non_finite
    )
    U = scaled_up_factor(b, scale)  # (out, r)
    V = np.array(a.T, dtype=np.float32, order="C")  # (in, r)
    return LoraModule(keys.name, U, V, float(scale), alpha, kind, kernel)


def scaled_up_factor(b: np.ndarray, scale: float) -> np.ndarray:
    """``scale * b`` in float32, rounded once from the exact product (any leading dims).

    When ``scale`` is exact in float32 the float64 product of two float32 values is exact, so one
    float32 multiply rounds it the same way as the float64 round trip, in one op fewer.
    """
    if scale == 1.0:
        return b.astype(np.float32)
    if float(np.float32(scale)) == scale:
        return b.astype(np.float32) * np.float32(scale)
    return (b.astype(np.float64) * scale).astype(np.float32)


@dataclass(frozen=True)
class FactorLocation:
    """Where one module's factors sit in a file's data buffer, and the scale applied to B."""

    name: str
    a: TensorInfo  # (r, in) or conv (r, in, kh, kw)
    b: TensorInfo  # (out, r) or conv (out, r, 1, 1)
    scale: float


@dataclass(frozen=True)
class FileLayout:
    """A validated file's layout: what every file with the same header and config shares.

    ``data_independent`` is False when a scale comes from an alpha tensor in the data (then files
    of one header may still differ in scale, and each must be read on its own).
    """

    spec: LoraSpec
    data_start: int
    file_size: int
    factors: tuple[FactorLocation, ...]  # spec order
    data_independent: bool
    config: bytes | None = None
    """The adapter_config.json bytes the scales were computed from."""

    def scales_for(self, config: bytes | None) -> tuple[float, ...]:
        """Each module's scale for a file of this layout read with ``config`` (validated as
        :func:`load_adapter` validates it; same order as ``factors``).

        Raises:
            AdapterConfigError: ``config`` is not a valid adapter_config.json.
            ValueError: the scales of this layout depend on more than the config (alpha tensors, or
                a config embedded in the header that ``config=None`` would fall back to).
        """
        if config == self.config:
            return tuple(f.scale for f in self.factors)
        if not self.data_independent or config is None or self.config is None:
            raise ValueError("this layout's scales come from the file itself; read it on its own")
        cfg = parse_adapter_config(config)
        return tuple(cfg.scale_for(f.name, int(f.a.shape[0])) for f in self.factors)


def file_layout(data: bytes, config: bytes | None = None) -> FileLayout:
    """Validate ``data`` completely (as :func:`load_adapter` does) and describe its layout.

    Raises:
        LoraFileError: any subclass, exactly as :func:`load_adapter` raises for this file.
    """
    adapter = load_adapter(data, config=config)
    header, layout = _header_and_layout(bytes(data), MAX_HEADER_BYTES)
    factors = tuple(
        FactorLocation(keys.name, header.tensors[keys.a], header.tensors[keys.b], module.scale)
        for keys, module in zip(layout.modules, adapter.modules, strict=True)
    )
    independent = config is not None or adapter.scale_source != "alpha_keys"
    return FileLayout(adapter.spec, header.data_start, len(data), factors, independent, config)


def _module_factors(
    data: bytes | memoryview,
    header: SafetensorsHeader,
    keys: ModuleKeys,
    fmt: LoraFormat,
    cfg: AdapterConfig | None,
    allow_non_finite: bool,
) -> tuple[
    np.ndarray, np.ndarray, Literal["linear", "conv"], tuple[int, int] | None, float | None, float
]:
    """Every check of one module; returns (A 2-D, B 2-D, kind, kernel, alpha, scale), factors in their file dtype."""
    a = _read_tensor(data, header, header.tensors[keys.a])
    b = _read_tensor(data, header, header.tensors[keys.b])
    kind: Literal["linear", "conv"] = "linear"
    kernel = None
    if a.ndim == 4 and b.ndim == 4:
        if b.shape[2:] != (1, 1):
            raise RankMismatchError(
                f"module {keys.name!r}: conv up factor has kernel {list(b.shape[2:])}; LoRA up factors are 1x1"
            )
        kind, kernel = "conv", (int(a.shape[2]), int(a.shape[3]))
        a = a.reshape(a.shape[0], -1)
        b = b.reshape(b.shape[0], b.shape[1])
    elif a.ndim != 2 or b.ndim != 2:
        raise RankMismatchError(
            f"module {keys.name!r}: factors have shapes {list(a.shape)} and {list(b.shape)}; accepted are "
            "2-D (linear: A [r, in], B [out, r]) or 4-D (conv: down [r, in, kh, kw], up [out, r, 1, 1])"
        )
    r = a.shape[0]
    if b.shape[1] != r:
        raise RankMismatchError(
            f"module {keys.name!r}: A has rank {r} ({keys.a!r} shape {list(header.tensors[keys.a].shape)}) but B has "
            f"rank {b.shape[1]} ({keys.b!r} shape {list(header.tensors[keys.b].shape)}); both must share r"
        )
    out_f, in_f = b.shape[0], a.shape[1]
    if r < 1 or out_f < 1 or in_f < 1:
        raise RankMismatchError(
            f"module {keys.name!r}: empty factor (r={r}, out={out_f}, in={in_f})"
        )
    if r > min(out_f, in_f):
        raise RankMismatchError(
            f"module {keys.name!r}: rank {r} exceeds min(out={out_f}, in={in_f}); a LoRA must be low-rank"
        )
    if not allow_non_finite:
        for key, arr in ((keys.a, a), (keys.b, b)):
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise NonFiniteWeightsError(
                    f"tensor {key!r} holds {bad} NaN/Inf value(s); only finite weights are accepted"
                )
    alpha = _read_alpha(data, header, keys.alpha) if keys.alpha else None
    if cfg is not None:
        scale = cfg.scale_for(keys.name, r)
        alpha = cfg.alpha_for(keys.name)
    elif alpha is not None:
        scale = 1.0 if alpha == 0 else alpha / r  # kohya: alpha 0 means alpha = r
    else:
        scale = 1.0
    return a, b, kind, kernel, alpha, scale
