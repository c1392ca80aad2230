"""A catalogue of malformed and hostile LoRA files (modelled on the safetensors reference's attack
list): each case is (name, file bytes, the ``lora_io`` error class it must raise, words its message
must contain). The ``lora_io`` tests assert every case; the reliability suite uploads them all.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np

from harness.lora_files import raw_safetensors, safetensors_bytes
from lora_io import errors as E


def good_pair(
    prefix: str = "base_model.model.layer.0.q", r: int = 2, n: int = 6, m: int = 5
) -> dict:
    rng = np.random.default_rng(0)
    return {f"{prefix}.lora_A.weight": rng.normal(size=(r, m)).astype("float32"),
            f"{prefix}.lora_B.weight": rng.normal(size=(n, r)).astype("float32")}  # fmt: skip


def entry(dtype: str, shape: list, start: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}


def pickle_creating(path: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (open, (str(path), "w"))

    return pickle.dumps(Payload(), protocol=2)


def _torch_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": [1.0]}, protocol=2))
    return buf.getvalue()


def _deep_json(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"]" * depth + b"}"


A22 = entry("F32", [2, 2], 0, 16)
CASES: list[tuple[str, bytes, type[Exception], str]] = [
    ("empty file", b"", E.HeaderError, "too short"),
    ("seven bytes", b"\x01" * 7, E.HeaderError, "too short"),
    ("huge header length", struct.pack("<Q", 2**63) + b"{}", E.FileTooLargeError, "header declares"),
    ("header above LoRA cap", struct.pack("<Q", 4 << 20) + b"{}", E.FileTooLargeError, "accepted up to"),
    ("header longer than file", raw_safetensors(b"{}", length=500), E.HeaderError, "declares 500 bytes"),
    ("header not utf-8", raw_safetensors(b'{"\xff\xfe": 1}'), E.HeaderError, "UTF-8"),
    ("header not an object", raw_safetensors(b"[1, 2]"), E.HeaderError, "start with '{'"),
    ("header invalid json", raw_safetensors(b'{"a": '), E.HeaderError, "not valid JSON"),
    ("duplicate keys", raw_safetensors(b'{"w": %s, "w": %s}' % (json.dumps(A22).encode(), json.dumps(A22).encode()), b"\0" * 16), E.HeaderError, "duplicate key 'w'"),
    ("NaN literal", raw_safetensors(b'{"w": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 0]}}'), E.HeaderError, "JSON constant NaN"),
    ("deeply nested json", raw_safetensors(_deep_json(200_000)), E.HeaderError, "nested too deeply"),
    ("metadata not strings", raw_safetensors({"__metadata__": {"a": 1}}), E.HeaderError, "__metadata__ must map strings"),
    ("metadata arbitrary json", raw_safetensors({"__metadata__": {"a": {"b": "c"}}}), E.HeaderError, "__metadata__"),
    ("entry missing offsets", raw_safetensors({"w": {"dtype": "F32", "shape": [1]}}), E.HeaderError, "exactly dtype, shape and data_offsets"),
    ("entry extra field", raw_safetensors({"w": {**A22, "x": 1}}, b"\0" * 16), E.HeaderError, "exactly dtype"),
    ("unknown dtype", raw_safetensors({"w": entry("F17", [1], 0, 4)}, b"\0" * 4), E.HeaderError, "unknown dtype 'F17'"),
    ("negative dim", raw_safetensors({"w": entry("F32", [-1], 0, 4)}, b"\0" * 4), E.HeaderError, "non-negative integers"),
    ("boolean dim", raw_safetensors({"w": entry("F32", [True], 0, 4)}, b"\0" * 4), E.HeaderError, "non-negative integers"),
    ("too many dims", raw_safetensors({"w": entry("F32", [1] * 9, 0, 4)}, b"\0" * 4), E.HeaderError, "at most 8"),
    ("offsets reversed", raw_safetensors({"w": entry("F32", [1], 4, 0)}, b"\0" * 4), E.HeaderError, "before start"),
    ("offsets wrong size", raw_safetensors({"w": entry("F32", [2, 2], 0, 12)}, b"\0" * 12), E.HeaderError, "needs 16 bytes"),
    ("sub-byte misaligned", raw_safetensors({"w": entry("F4", [3], 0, 2)}, b"\0" * 2), E.HeaderError, "whole number of bytes"),
    ("overlapping tensors", raw_safetensors({"a": A22, "b": entry("F32", [2, 2], 8, 24)}, b"\0" * 24), E.HeaderError, "overlaps"),
    ("hole between tensors", raw_safetensors({"a": A22, "b": entry("F32", [2, 2], 20, 36)}, b"\0" * 36), E.HeaderError, "hole of 4 bytes"),
    ("buffer not from zero", raw_safetensors({"a": entry("F32", [2, 2], 4, 20)}, b"\0" * 20), E.HeaderError, "contiguous from 0"),
    ("trailing bytes (polyglot)", raw_safetensors({"a": A22}, b"\0" * 16 + b"<script>"), E.HeaderError, "after the last tensor"),
    ("truncated buffer", raw_safetensors({"a": A22}, b"\0" * 10), E.HeaderError, "truncated"),
    ("too many tensors", raw_safetensors({f"t{i}": entry("F32", [0], 0, 0) for i in range(16_385)}), E.HeaderError, "at most 16,384"),
    ("huge tensor name", raw_safetensors({"x" * 2000: entry("F32", [0], 0, 0)}), E.HeaderError, "tensor name of 2,000 bytes"),
    ("huge declared shape", raw_safetensors({"w": entry("F32", [2**40, 2**40], 0, 4)}, b"\0" * 4), E.HeaderError, "data_offsets span 4"),
    ("pickle protocol 2", pickle.dumps({"w": [1.0]}, protocol=2), E.PickleFileError, "Python pickle (protocol 2)"),
    ("pickle protocol 5", pickle.dumps({"w": [1.0]}, protocol=5), E.PickleFileError, "never opened"),
    ("pickle protocol 0", pickle.dumps({"w": 1}, protocol=0), E.PickleFileError, "protocol-0/1 Python pickle"),
    ("torch.save zip", _torch_zip(), E.PickleFileError, "zip archive"),
    ("gguf file", b"GGUF" + b"\0" * 60, E.NotSafetensorsError, "GGUF"),
    ("empty header", raw_safetensors(b"{}"), E.NotALoraError, "no tensors"),
    ("LoHa", safetensors_bytes({"lora_unet_x.hada_w1_a": np.zeros((2, 2), "float32")}), E.UnsupportedVariantError, "LoHa"),
    ("LoKr", safetensors_bytes({"lora_unet_x.lokr_w1": np.zeros((2, 2), "float32")}), E.UnsupportedVariantError, "LoKr"),
    ("DoRA (PEFT)", safetensors_bytes({**good_pair(), "base_model.model.layer.0.q.lora_magnitude_vector": np.ones(6, "float32")}), E.UnsupportedVariantError, "DoRA"),
    ("DoRA (kohya)", safetensors_bytes({"lora_unet_x.dora_scale": np.ones((1, 4), "float32")}), E.UnsupportedVariantError, "DoRA"),
    ("OFT", safetensors_bytes({"lora_unet_x.oft_blocks": np.ones((2, 4, 4), "float32")}), E.UnsupportedVariantError, "OFT"),
    ("IA3", safetensors_bytes({"base_model.model.layer.0.k.ia3_l.weight": np.ones((6, 1), "float32")}), E.UnsupportedVariantError, "IA3"),
    ("full-weight diff", safetensors_bytes({"lora_unet_x.diff": np.ones((4, 4), "float32")}), E.UnsupportedVariantError, "full-weight diff"),
    ("Tucker LoCon", safetensors_bytes({"lora_unet_x.lora_mid.weight": np.ones((2, 2, 3, 3), "float32")}), E.UnsupportedVariantError, "lora_mid"),
    ("modules_to_save weight", safetensors_bytes({**good_pair(), "base_model.model.classifier.weight": np.ones((3, 5), "float32")}), E.NotALoraError, "not LoRA factors"),
    ("unpaired A", safetensors_bytes({k: v for k, v in good_pair().items() if "lora_A" in k}), E.UnpairedFactorError, "no lora_B / lora_up factor"),
    ("unpaired alpha", safetensors_bytes({"lora_unet_a.alpha": np.asarray(4.0, "float32")}), E.NotALoraError, "no LoRA factor keys"),
    ("rank mismatch", safetensors_bytes({"m.lora_A.weight": np.ones((4, 5), "float32"), "m.lora_B.weight": np.ones((6, 8), "float32")}), E.RankMismatchError, "A has rank 4"),
    ("rank above dims", safetensors_bytes({"m.lora_A.weight": np.ones((7, 5), "float32"), "m.lora_B.weight": np.ones((6, 7), "float32")}), E.RankMismatchError, "exceeds min"),
    ("3-D factor", safetensors_bytes({"m.lora_A.weight": np.ones((2, 5, 1), "float32"), "m.lora_B.weight": np.ones((6, 2), "float32")}), E.RankMismatchError, "2-D"),
    ("integer factors", safetensors_bytes({"m.lora_A.weight": np.ones((2, 5), "int32"), "m.lora_B.weight": np.ones((6, 2), "int32")}), E.UnsupportedDtypeError, "dtype I32"),
    ("NaN factor", safetensors_bytes({"m.lora_A.weight": np.full((2, 5), np.nan, "float32"), "m.lora_B.weight": np.ones((6, 2), "float32")}), E.NonFiniteWeightsError, "10 NaN/Inf"),
    ("Inf factor", safetensors_bytes({"m.lora_A.weight": np.ones((2, 5), "float16"), "m.lora_B.weight": np.full((6, 2), np.inf, "float16")}), E.NonFiniteWeightsError, "NaN/Inf"),
    ("alpha not scalar", safetensors_bytes({"lora_unet_a.lora_down.weight": np.ones((2, 5), "float32"), "lora_unet_a.lora_up.weight": np.ones((6, 2), "float32"), "lora_unet_a.alpha": np.ones(3, "float32")}), E.RankMismatchError, "single scalar"),
    ("two adapters", safetensors_bytes({"m.lora_A.one.weight": np.ones((2, 5), "float32"), "m.lora_B.one.weight": np.ones((6, 2), "float32"), "n.lora_A.two.weight": np.ones((2, 5), "float32"), "n.lora_B.two.weight": np.ones((6, 2), "float32")}), E.NotALoraError, "several adapters"),
    ("mixed conventions", safetensors_bytes({**good_pair(), "lora_unet_a.lora_down.weight": np.ones((2, 5), "float32"), "lora_unet_a.lora_up.weight": np.ones((6, 2), "float32")}), E.NotALoraError, "mixes key conventions"),
]  # fmt: skip
