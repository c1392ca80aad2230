"""A bounded, standard-library-only reader and validator for safetensors headers.

Why our own parser: the API must refuse a hostile upload from its first bytes, before it is stored,
without importing torch or trusting a native parser with an unbounded header. The rules are those of
the reference implementation (``safetensors/src/tensor.rs``), plus a header cap suited to LoRAs and
a few limits that no LoRA comes near:

* 8-byte little-endian header length ``N``; ``N`` at most :data:`MAX_HEADER_BYTES`;
* UTF-8 JSON object starting with ``{`` (trailing spaces allowed), duplicate keys rejected (Python's
  ``json`` would silently keep the last one: a parser differential), no NaN/Infinity literals;
* ``__metadata__`` a string-to-string map; every other entry exactly ``dtype``, ``shape``,
  ``data_offsets`` with a known dtype and non-negative integer dims;
* data offsets contiguous from 0 with no hole or overlap, each span equal to shape × dtype bits / 8,
  and the byte buffer covered exactly up to the end of the file (no trailing bytes: no polyglots).

Anything that is not safetensors at all is named: pickles and PyTorch zip archives are refused as
such (never unpickled), and a few other weight formats are recognised by their magic bytes. The
safetensors structure is tried first and magic bytes are read only when it fails: the 8-byte length
prefix of a valid file can itself start with a marker (a 896-byte header is ``80 03 00 ...``, the
pickle protocol-3 opcode; 25,640 bytes is ``(d``, a protocol-0 pickle's start).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lora_io.errors import FileTooLargeError, HeaderError, NotSafetensorsError, PickleFileError

MAX_HEADER_BYTES = 1 << 20
"""Header cap in bytes (1 MiB). A LoRA header is tens of KB; the reference allows 100 MB."""

MAX_TENSORS = 16_384
"""Most tensors per file. A full SDXL kohya LoRA (UNet + both text encoders) has about 2,200."""

MAX_NAME_BYTES = 1_024
"""Longest tensor name, in UTF-8 bytes."""

MAX_DIMS = 8
"""Most dimensions per tensor (LoRA factors have 2 or 4; alphas have 0)."""

DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8,
    "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16,
    "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64,
    "U64": 64,
}  # fmt: skip
"""Every dtype the reference parser knows, with its size in bits (sub-byte types exist)."""

_TENSOR_FIELDS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor entry: ``start``/``end`` are byte offsets relative to the data buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated header: tensors in file order, string metadata, and where the data starts."""

    header_length: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        """Absolute file offset of the byte buffer."""
        return 8 + self.header_length

    @property
    def data_length(self) -> int:
        return max((t.end for t in self.tensors.values()), default=0)

    @property
    def file_size(self) -> int:
        """The exact size a file with this header must have."""
        return self.data_start + self.data_length


def sniff_foreign_format(prefix: bytes) -> None:
    """Raise if the first bytes show a known non-safetensors format (pickle above all).

    Detection is by content only: a pickle named ``adapter.safetensors`` is still a pickle.
    """
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        raise PickleFileError(
            f"this is a Python pickle (protocol {prefix[1]}), the format of .bin/.pt/.pth/.ckpt/.pkl "
            "files; pickles can run code when loaded, so they are refused and never opened. "
            "Accepted: a .safetensors file (convert with safetensors.torch.save_file where you trust the source)"
        )
    if prefix.startswith(b"PK\x03\x04"):
        raise PickleFileError(
            "this is a zip archive such as PyTorch's torch.save format, which wraps a pickle; pickles "
            "can run code when loaded, so they are refused and never opened. Accepted: a .safetensors file"
        )
    if (
        len(prefix) >= 2
        and prefix[:1] in {b"(", b"]", b"}"}
        and prefix[1:2] in {b"d", b"l", b"q", b"c", b"(", b"S", b"I", b"V", b"X", b"t"}
    ):
        raise PickleFileError(
            "this looks like a protocol-0/1 Python pickle; pickles can run code when loaded, so they "
            "are refused and never opened. Accepted: a .safetensors file"
        )
    for magic, name in ((b"GGUF", "a GGUF file"), (b"\x93NUMPY", "a NumPy .npy file"),
                        (b"\x89HDF", "an HDF5 file"), (b"\x1f\x8b", "a gzip archive"),
                        (b"ustar", "a tar archive")):  # fmt: skip
        if prefix.startswith(magic):
            raise NotSafetensorsError(
                f"this is {name}, not safetensors. Accepted: a .safetensors LoRA file"
            )


def starts_like_safetensors(prefix: bytes, max_header_bytes: int = MAX_HEADER_BYTES) -> bool:
    """The structure a safetensors file starts with: a length within the cap, then ``{``.

    A pickle or archive cannot have it: its marker bytes would make the length gigantic, or the
    byte after the length would have to be ``{`` with zero bytes before it.
    """
    if len(prefix) < 9:
        return False
    (n,) = struct.unpack("<Q", prefix[:8])
    return 2 <= n <= max_header_bytes and prefix[8:9] == b"{"


def header_length(prefix: bytes, *, max_header_bytes: int = MAX_HEADER_BYTES) -> int:
    """Validate the first bytes (9 or more to tell safetensors from a marker) and return ``N``.

    Lets a stream reader know how many bytes it must buffer before :func:`parse_header`. Magic
    bytes are sniffed only when the safetensors structure is absent (see the module docstring).
    """
    if not starts_like_safetensors(prefix, max_header_bytes):
        sniff_foreign_format(prefix[:16])
    if len(prefix) < 8:
        raise HeaderError(
            f"file is {len(prefix)} bytes, too short for a safetensors header (8-byte length + JSON)"
        )
    n = int(struct.unpack("<Q", prefix[:8])[0])
    if n > max_header_bytes:
        raise FileTooLargeError(
            f"safetensors header declares {n:,} bytes; LoRA headers are accepted up to "
            f"{max_header_bytes:,} bytes (a LoRA header is usually tens of KB)"
        )
    if n < 2:
        raise HeaderError(f"safetensors header length {n} is too small for a JSON object")
    return n


def parse_header(
    prefix: bytes, file_size: int | None = None, *, max_header_bytes: int = MAX_HEADER_BYTES
) -> SafetensorsHeader:
    """Parse and validate a header from the first bytes of a file or stream.

    Args:
        prefix: at least the first ``8 + N`` bytes of the file (more is fine).
        file_size: total size when known; then exact coverage of the buffer is checked too.
        max_header_bytes: the header cap.

    Raises:
        PickleFileError, NotSafetensorsError, FileTooLargeError, HeaderError.
    """
    n = header_length(prefix, max_header_bytes=max_header_bytes)
    if len(prefix) < 8 + n:
        if file_size is not None and file_size < 8 + n:
            raise HeaderError(
                f"header declares {n:,} bytes but the file has only {max(file_size - 8, 0):,} after the length prefix"
            )
        raise HeaderError(f"incomplete header: need {8 + n:,} bytes, got {len(prefix):,}")
    raw = prefix[8 : 8 + n]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(f"safetensors header is not valid UTF-8 (byte {exc.start})") from None
    if not text.startswith("{"):
        raise HeaderError("safetensors header must start with '{' (a JSON object)")
    doc = _load_json(text)
    if not isinstance(doc, dict):
        raise HeaderError("safetensors header must be a JSON object")
    header = _validate_entries(doc, n)
    if file_size is not None:
        check_file_size(header, file_size)
    return header


def check_file_size(header: SafetensorsHeader, file_size: int) -> None:
    """The buffer must end exactly at the end of the file: no truncation, no trailing bytes."""
    if file_size < header.file_size:
        raise HeaderError(
            f"file is truncated: the header describes {header.file_size:,} bytes, the file has {file_size:,}"
        )
    if file_size > header.file_size:
        raise HeaderError(
            f"file has {file_size - header.file_size:,} bytes after the last tensor; safetensors "
            "requires the byte buffer to be covered exactly (no trailing data)"
        )


def read_header(path: str | Path, *, max_header_bytes: int = MAX_HEADER_BYTES) -> SafetensorsHeader:
    """Read and validate the header of a file on disk, reading only the header bytes."""
    p = Path(path)
    size = p.stat().st_size
    with p.open("rb") as f:
        first = f.read(16)
        n = header_length(first, max_header_bytes=max_header_bytes)
        rest = f.read(max(0, 8 + n - len(first)))
    return parse_header(first + rest, size, max_header_bytes=max_header_bytes)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise HeaderError(
                f"duplicate key {key!r} in the safetensors header; each tensor name must appear once "
                "(parsers disagree on which copy wins)"
            )
        out[key] = value
    return out


def _reject_constant(name: str) -> None:
    raise HeaderError(f"JSON constant {name} is not valid in a safetensors header")


def _load_json(text: str) -> Any:
    try:
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise HeaderError("safetensors header JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise HeaderError(
            f"safetensors header is not valid JSON: {exc.msg} at byte {exc.pos}"
        ) from None


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate_entries(doc: dict[str, Any], n: int) -> SafetensorsHeader:
    metadata: dict[str, str] = {}
    raw_meta = doc.pop("__metadata__", None)
    if raw_meta is not None:
        if not isinstance(raw_meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw_meta.items()
        ):
            raise HeaderError(
                "__metadata__ must map strings to strings (arbitrary JSON is not allowed in safetensors metadata)"
            )
        metadata = raw_meta
    if len(doc) > MAX_TENSORS:
        raise HeaderError(
            f"header lists {len(doc):,} tensors; at most {MAX_TENSORS:,} are accepted"
        )
    infos: list[TensorInfo] = []
    for name, entry in doc.items():
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise HeaderError(
                f"tensor name of {len(name.encode()):,} bytes; at most {MAX_NAME_BYTES} accepted"
            )
        if not isinstance(entry, dict) or set(entry) != _TENSOR_FIELDS:
            raise HeaderError(
                f"tensor {name!r}: entry must be an object with exactly dtype, shape and data_offsets"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise HeaderError(
                f"tensor {name!r}: unknown dtype {dtype!r}; safetensors dtypes are {', '.join(DTYPE_BITS)}"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_DIMS
            or not all(_is_int(d) and d >= 0 for d in shape)
        ):
            raise HeaderError(
                f"tensor {name!r}: shape must be a list of at most {MAX_DIMS} non-negative integers, got {shape!r}"
            )
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_int(o) and o >= 0 for o in offsets)
        ):
            raise HeaderError(
                f"tensor {name!r}: data_offsets must be two non-negative integers, got {offsets!r}"
            )
        start, end = offsets
        if end < start:
            raise HeaderError(f"tensor {name!r}: data_offsets end {end} is before start {start}")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8:
            raise HeaderError(
                f"tensor {name!r}: {math.prod(shape)} x {dtype} is not a whole number of bytes"
            )
        if end - start != bits // 8:
            raise HeaderError(
                f"tensor {name!r}: shape {shape} x {dtype} needs {bits // 8:,} bytes but data_offsets span {end - start:,}"
            )
        infos.append(TensorInfo(name, dtype, tuple(shape), start, end))
    infos.sort(key=lambda t: (t.start, t.end))
    cursor = 0
    for info in infos:
        if info.start != cursor:
            what = (
                "overlaps the previous tensor"
                if info.start < cursor
                else f"leaves a hole of {info.start - cursor:,} bytes"
            )
            raise HeaderError(
                f"tensor {info.name!r} starts at byte {info.start:,} but the previous tensor ends at {cursor:,}: "
                f"it {what}; safetensors offsets must be contiguous from 0"
            )
        cursor = info.end
    return SafetensorsHeader(header_length=n, tensors={t.name: t for t in infos}, metadata=metadata)
