"""Bad input for the API: the lora_io hostile catalogue, plus files made by mutating valid LoRAs.

Every mutant is deterministic (seeded), so a run can be repeated byte for byte. Mutation kinds:
bit flips, truncation, header edits (dtypes, shapes, offsets, key names, metadata, length prefix),
wrong dtypes, huge declared shapes, deep or huge JSON, and hostile ``adapter_config.json`` parts
(including regular expressions built to backtrack for ever).
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.lora_files import (
    adapter_config,
    clip_text_modules,
    kohya_lora,
    peft_adapter,
    raw_safetensors,
    safetensors_bytes,
    sd15_unet_modules,
)


@dataclass(frozen=True)
class BadInput:
    name: str
    kind: str
    data: bytes
    config: bytes | None = None
    raw: bool = False
    """Send as an application/octet-stream body instead of multipart."""


def catalogue() -> list[BadInput]:
    """The 56 hostile files of ``tests/lora_io/test_hostile_files.py`` (its ``CASES``)."""
    from harness.hostile_files import CASES

    return [
        BadInput(name, "catalogue", data, raw=i % 2 == 1)
        for i, (name, data, _, _) in enumerate(CASES)
    ]


def _split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _join(header: dict | bytes, body: bytes, *, length: int | None = None) -> bytes:
    return raw_safetensors(header, body, length=length)


def _seeds() -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(7)
    small_kohya = safetensors_bytes(kohya_lora(sd15_unet_modules()[:6], "lora_unet", 2, 2.0, rng))
    te = safetensors_bytes(kohya_lora(clip_text_modules(1, 64), "lora_te", 4, 4.0, rng, "float32"))
    return [("peft", peft_adapter(3)), ("kohya-unet", small_kohya), ("kohya-te", te)]


def _tensor_names(header: dict) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def _header_edit(rnd: random.Random, header: dict, body: bytes) -> tuple[str, bytes]:
    names = _tensor_names(header)
    name = rnd.choice(names)
    entry = header[name]
    edit = rnd.randrange(18)
    if edit == 0:
        entry["dtype"] = rnd.choice(["I32", "U8", "BOOL", "F8_E4M3", "I64", "C64", "U16", "F4"])
        return "wrong dtype", _join(header, body)
    if edit == 1:  # same bytes, another float dtype: sizes now disagree or values reinterpreted
        entry["dtype"] = rnd.choice(["F16", "BF16", "F64", "F32"])
        return "float dtype swap", _join(header, body)
    if edit == 2:
        entry["shape"] = [
            rnd.choice([2**31, 2**40, 2**62, 2**63 - 1]),
            rnd.choice([2**31, 2**33, 1]),
        ]
        return "huge declared shape", _join(header, body)
    if edit == 3:
        entry["shape"] = [rnd.choice([-1, 1.5, "4", None, True, [2]]), 4]
        return "bad shape value", _join(header, body)
    if edit == 4:
        entry["shape"] = list(reversed(entry["shape"]))
        return "transposed shape", _join(header, body)
    if edit == 5:
        s, e = entry["data_offsets"]
        d = rnd.choice([-8, -2, -1, 1, 2, 8, 2**40])
        entry["data_offsets"] = [max(0, s + d), e + d]
        return "shifted offsets", _join(header, body)
    if edit == 6:
        entry["data_offsets"] = [entry["data_offsets"][1], entry["data_offsets"][0]]
        return "reversed offsets", _join(header, body)
    if edit == 7:
        header[name.replace("lora_A", "lora_X").replace("lora_down", "lora_sideways")] = header.pop(
            name
        )
        return "renamed factor key", _join(header, body)
    if edit == 8:
        del header[name]
        return "deleted tensor entry", _join(header, body)
    if edit == 9:
        header["__metadata__"] = {"ss_network_dim": {"nested": [1, 2, 3]}}
        return "metadata not strings", _join(header, body)
    if edit == 10:
        depth = rnd.choice([1_000, 50_000, 400_000])
        meta = b'{"__metadata__": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
        return "deep json", _join(meta, body)
    if edit == 11:
        header["__metadata__"] = {
            f"k{i}": "v" * rnd.choice([10, 100]) for i in range(rnd.choice([5_000, 9_000]))
        }
        return "huge metadata", _join(header, body)
    if edit == 12:
        text = json.dumps(header).encode()
        return "length prefix off", _join(
            text, body, length=len(text) + rnd.choice([-3, -1, 1, 7, 1 << 19])
        )
    if edit == 13:
        text = json.dumps(header).encode()
        return "header padded with garbage", _join(
            text + rnd.choice([b"\x00" * 8, b"\xff\xfe", b" junk"]), body
        )
    if edit == 14:
        text = json.dumps(header).encode()
        dup = b'{"%s": %s, ' % (name.encode(), json.dumps(entry).encode()) + text[1:]
        return "duplicate key", _join(dup, body)
    if edit == 15:
        header[name + "\x00evil"] = header.pop(name)
        return "NUL in tensor name", _join(header, body)
    if edit == 16:
        header = {
            "__metadata__": {"a": "b"},
            **{
                f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}
                for i in range(20_000)
            },
        }
        return "too many tensors", _join(header, b"")
    header[name]["data_offsets"] = [0, entry["data_offsets"][1]]
    return "overlapping offsets", _join(header, body)


def _config_attack(rnd: random.Random) -> tuple[str, bytes]:
    choice = rnd.randrange(8)
    if choice == 0:  # regular expressions that backtrack for ever on module names
        pat = rnd.choice(
            [r"([a-z0-9._]|[a-z0-9._])*!", r"(.*)*!", r"(\w+\.?)+!", r"(a|aa)+$x", r"(.*.*)*x"]
        )
        field = rnd.choice(["rank_pattern", "alpha_pattern"])
        return "ReDoS pattern", json.dumps({"r": 4, "lora_alpha": 8, field: {pat: 4}}).encode()
    if choice == 1:
        return "polynomial pattern", json.dumps(
            {"r": 4, "lora_alpha": 8, "alpha_pattern": {".*.*.*.*.*!": 4}}
        ).encode()
    if choice == 2:
        d = rnd.choice([10_000, 100_000])
        return "deep config json", b'{"r": 4, "x": ' + b"[" * d + b"]" * d + b"}"
    if choice == 3:
        return "absurd numbers", json.dumps(
            {"r": rnd.choice([10**400, -1, 0, 2**63]), "lora_alpha": 8}
        ).encode()
    if choice == 4:
        return "alpha not finite", b'{"r": 4, "lora_alpha": 1e999}'
    if choice == 5:
        return "pattern types", json.dumps(
            {"r": 4, "rank_pattern": ["a", "b"], "alpha_pattern": "x"}
        ).encode()
    if choice == 6:
        return "many patterns", json.dumps(
            {"r": 4, "rank_pattern": {f"m{i}": 2 for i in range(5000)}}
        ).encode()
    return "config not json", bytes(rnd.getrandbits(8) for _ in range(64))


def mutants(count: int, seed: int = 2024) -> list[BadInput]:
    """``count`` deterministic mutants of valid LoRA files (about a fifth of them with a hostile config)."""
    rnd = random.Random(seed)
    seeds = _seeds()
    out: list[BadInput] = []
    kinds: list[Callable[[], BadInput]] = []

    def bit_flips() -> BadInput:
        label, data = rnd.choice(seeds)
        buf = bytearray(data)
        n = struct.unpack("<Q", data[:8])[0]
        region = rnd.choice(["prefix", "header", "anywhere"])
        for _ in range(rnd.choice([1, 2, 4, 16])):
            hi = 8 if region == "prefix" else (8 + n if region == "header" else len(buf))
            i = rnd.randrange(0 if region != "header" else 8, hi)
            buf[i] ^= 1 << rnd.randrange(8)
        return BadInput(f"bit flips in {region} of {label}", "bit_flip", bytes(buf))

    def truncation() -> BadInput:
        label, data = rnd.choice(seeds)
        n = struct.unpack("<Q", data[:8])[0]
        cut = rnd.choice(
            [rnd.randrange(1, 8), rnd.randrange(8, 8 + n), rnd.randrange(8 + n, len(data))]
        )
        return BadInput(f"{label} truncated at {cut}", "truncation", data[:cut])

    def extension() -> BadInput:
        label, data = rnd.choice(seeds)
        tail = rnd.choice([b"\0", b"PK\x03\x04", b"<script>alert(1)</script>", bytes(1000)])
        return BadInput(f"{label} with trailing bytes", "trailing_bytes", data + tail)

    def header_edit() -> BadInput:
        label, data = rnd.choice(seeds)
        header, body = _split(data)
        what, mutated = _header_edit(rnd, header, body)
        return BadInput(f"{what} ({label})", "header_edit", mutated)

    def config_attack() -> BadInput:
        what, cfg = _config_attack(rnd)
        return BadInput(f"config: {what}", "config", peft_adapter(rnd.randrange(1000)), config=cfg)

    def nonfinite() -> BadInput:
        label, data = rnd.choice(seeds[:1])
        header, body = _split(data)
        buf = bytearray(body)
        struct.pack_into(
            "<f", buf, 4 * rnd.randrange(len(buf) // 4), rnd.choice([float("nan"), float("inf")])
        )
        return BadInput(f"NaN/Inf written into {label}", "non_finite", _join(header, bytes(buf)))

    def random_bytes() -> BadInput:
        size = rnd.choice([8, 64, 4096])
        head = struct.pack("<Q", rnd.choice([2, 100, size])) + b"{"
        return BadInput(
            f"random bytes ({size})",
            "random",
            head + bytes(rnd.getrandbits(8) for _ in range(size)),
        )

    kinds = [bit_flips, bit_flips, truncation, truncation, extension, header_edit, header_edit, header_edit,
             header_edit, config_attack, config_attack, nonfinite, random_bytes]  # fmt: skip
    while len(out) < count:
        item = rnd.choice(kinds)()
        out.append(
            BadInput(
                item.name,
                item.kind,
                item.data,
                item.config,
                raw=item.config is None and rnd.random() < 0.4,
            )
        )
    return out


def valid_config() -> bytes:
    return adapter_config()
