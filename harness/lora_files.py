"""Test-side writers for LoRA files: well-formed safetensors from numpy, and raw bytes for hostile ones.

Every file the tests read is generated here or by PEFT itself; nothing binary lives in git.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np

_DTYPE_NAMES = {np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("float64"): "F64",
                np.dtype("int32"): "I32", np.dtype("int64"): "I64", np.dtype("uint8"): "U8"}  # fmt: skip


def raw_safetensors(
    header: dict | bytes | str, data: bytes = b"", *, length: int | None = None
) -> bytes:
    """Assemble 8-byte length + header + data with no validation (for hostile files)."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode()
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + data


def safetensors_bytes(
    tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> bytes:
    """A valid safetensors file, tensors laid out in the given order."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    chunks, offset = [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = "BF16" if arr.dtype == np.dtype("uint16") else _DTYPE_NAMES[arr.dtype]
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the reference writer pads to 8 bytes
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def with_header_length(data: bytes, length: int) -> bytes:
    """The same valid safetensors file with its header padded by spaces to exactly ``length`` bytes.

    Trailing spaces are allowed by the format, so this is how a real writer can land on any length
    (for example one whose little-endian prefix starts with a pickle or gzip marker).
    """
    (n,) = struct.unpack("<Q", data[:8])
    if length < len(data[8 : 8 + n].rstrip(b" ")):
        raise ValueError(f"header needs at least {n} bytes, asked for {length}")
    header = data[8 : 8 + n].rstrip(b" ").ljust(length, b" ")
    return struct.pack("<Q", length) + header + data[8 + n :]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- Stable Diffusion module tables
def sd15_unet_modules() -> list[tuple[str, int, int, str]]:
    """(diffusers path, out, in, kind) of the 192 modules a standard kohya SD 1.5 LoRA adapts.

    kind is ``linear`` or ``conv1x1`` (SD 1.5's proj_in/proj_out are 1x1 convs).
    """
    blocks = [
        (f"down_blocks.{b}.attentions.{a}", ch)
        for b, ch in enumerate((320, 640, 1280))
        for a in range(2)
    ]
    blocks += [("mid_block.attentions.0", 1280)]
    blocks += [
        (f"up_blocks.{b}.attentions.{a}", ch)
        for b, ch in zip((1, 2, 3), (1280, 640, 320), strict=False)
        for a in range(3)
    ]
    out = []
    for path, ch in blocks:
        tb = f"{path}.transformer_blocks.0"
        out.append((f"{path}.proj_in", ch, ch, "conv1x1"))
        for attn, kv_in in (("attn1", ch), ("attn2", 768)):
            out += [(f"{tb}.{attn}.to_q", ch, ch, "linear"), (f"{tb}.{attn}.to_k", ch, kv_in, "linear"),
                    (f"{tb}.{attn}.to_v", ch, kv_in, "linear"), (f"{tb}.{attn}.to_out.0", ch, ch, "linear")]  # fmt: skip
        out += [
            (f"{tb}.ff.net.0.proj", ch * 8, ch, "linear"),
            (f"{tb}.ff.net.2", ch, ch * 4, "linear"),
        ]
        out.append((f"{path}.proj_out", ch, ch, "conv1x1"))
    return out


def clip_text_modules(layers: int, hidden: int) -> list[tuple[str, int, int, str]]:
    out = []
    for i in range(layers):
        base = f"text_model.encoder.layers.{i}"  # under text_encoder / text_encoder_2
        out += [
            (f"{base}.self_attn.{p}", hidden, hidden, "linear")
            for p in ("q_proj", "k_proj", "v_proj", "out_proj")
        ]
        out += [
            (f"{base}.mlp.fc1", hidden * 4, hidden, "linear"),
            (f"{base}.mlp.fc2", hidden, hidden * 4, "linear"),
        ]
    return out


def sdxl_unet_modules(max_blocks: int = 2) -> list[tuple[str, int, int, str]]:
    """SDXL UNet attention modules with SAI block names (as kohya writes SDXL), first ``max_blocks`` per stack."""
    stacks = [("input_blocks.4.1", 640, 2), ("input_blocks.5.1", 640, 2), ("input_blocks.7.1", 1280, 10),
              ("input_blocks.8.1", 1280, 10), ("middle_block.1", 1280, 10), ("output_blocks.0.1", 1280, 10),
              ("output_blocks.3.1", 640, 2)]  # fmt: skip
    out = []
    for path, ch, n in stacks:
        out.append((f"{path}.proj_in", ch, ch, "linear"))  # SDXL's proj_in is a Linear
        for t in range(min(n, max_blocks)):
            tb = f"{path}.transformer_blocks.{t}"
            out += [(f"{tb}.attn1.to_q", ch, ch, "linear"), (f"{tb}.attn2.to_k", ch, 2048, "linear"),
                    (f"{tb}.attn2.to_v", ch, 2048, "linear"), (f"{tb}.attn2.to_out.0", ch, ch, "linear")]  # fmt: skip
    return out


def kohya_name(prefix: str, path: str) -> str:
    return f"{prefix}_{path.replace('.', '_')}"


def kohya_lora(modules: list[tuple[str, int, int, str]], prefix: str, rank: int, alpha: float | None,
               rng: np.random.Generator, dtype: str = "float16") -> dict[str, np.ndarray]:  # fmt: skip
    """kohya tensors (``lora_down`` / ``lora_up`` / ``alpha``) for the given modules."""
    tensors: dict[str, np.ndarray] = {}
    for path, out_f, in_f, kind in modules:
        name = kohya_name(prefix, path)
        if kind == "conv3x3":
            down = rng.normal(size=(rank, in_f, 3, 3))
            up = rng.normal(size=(out_f, rank, 1, 1))
        elif kind == "conv1x1":
            down = rng.normal(size=(rank, in_f, 1, 1))
            up = rng.normal(size=(out_f, rank, 1, 1))
        else:
            down, up = rng.normal(size=(rank, in_f)), rng.normal(size=(out_f, rank))
        tensors[f"{name}.lora_down.weight"] = (down * 0.01).astype(dtype)
        tensors[f"{name}.lora_up.weight"] = (up * 0.01).astype(dtype)
        if alpha is not None:
            tensors[f"{name}.alpha"] = np.asarray(alpha, dtype=dtype)
    return tensors


def diffusers_peft_lora(modules: list[tuple[str, int, int, str]], prefix: str, rank: int,
                        rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    tensors = {}
    for path, out_f, in_f, _ in modules:
        tensors[f"{prefix}.{path}.lora_A.weight"] = (
            rng.normal(size=(rank, in_f)).astype("float32") * 0.01
        )
        tensors[f"{prefix}.{path}.lora_B.weight"] = (
            rng.normal(size=(out_f, rank)).astype("float32") * 0.01
        )
    return tensors


def diffusers_legacy_lora(modules: list[tuple[str, int, int, str]], rank: int,
                          rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """Old diffusers attention-processor keys (``...attn1.processor.to_q_lora.down.weight``)."""
    tensors = {}
    for path, out_f, in_f, _ in modules:
        m = re.match(r"(.*)\.(attn[12])\.(to_q|to_k|to_v|to_out)(?:\.0)?$", path)
        if not m:
            continue
        key = f"unet.{m[1]}.{m[2]}.processor.{m[3]}_lora"
        tensors[f"{key}.down.weight"] = rng.normal(size=(rank, in_f)).astype("float32")
        tensors[f"{key}.up.weight"] = rng.normal(size=(out_f, rank)).astype("float32")
    return tensors


def small_diffusers_adapter(seed: int = 0) -> bytes:
    """A valid diffusers-style PEFT LoRA on two SD 1.5 UNet modules (rank 4, float32)."""
    modules = sd15_unet_modules()[:2]
    return safetensors_bytes(diffusers_peft_lora(modules, "unet", 4, np.random.default_rng(seed)))


def peft_adapter(
    seed: int = 0,
    *,
    layers: int = 2,
    hidden: int = 32,
    rank: int = 4,
    zero_b: bool = False,
    dtype: type[np.floating] = np.float32,
) -> bytes:
    """A PEFT LoRA on a small BERT-style encoder (query/value of each layer), as PEFT names it,
    stored as ``dtype`` (float16 is what PEFT's fp16 saves and the zoos hold)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for i in range(layers):
        for proj in ("query", "value"):
            base = f"base_model.model.encoder.layer.{i}.attention.self.{proj}"
            tensors[f"{base}.lora_A.weight"] = rng.normal(size=(rank, hidden)).astype(dtype)
            b = (
                np.zeros((hidden, rank), np.float32)
                if zero_b
                else rng.normal(size=(hidden, rank)).astype(np.float32) * 0.1
            )
            tensors[f"{base}.lora_B.weight"] = b.astype(dtype)
    return safetensors_bytes(tensors)


def adapter_config(rank: int = 4, alpha: float = 8.0) -> bytes:
    return json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["query", "value"]}
    ).encode()
