"""No false refusals: a valid safetensors file is never taken for a pickle, zip or gzip by its first bytes.

The 8-byte little-endian length prefix of a valid file can begin with a foreign format's marker: a
896-byte header is ``80 03 00 00 ...``, which is also how a protocol-3 pickle begins. Every header
length under the 1 MiB cap whose prefix collides with a marker the sniffer knows is written here as a
real, valid adapter (a diffusers-style PEFT LoRA, header padded with spaces as the format allows),
and each must load.
"""

from __future__ import annotations

import pickle
import struct

import pytest

import lora_io
from harness.lora_files import small_diffusers_adapter, with_header_length
from lora_io import errors as E
from lora_io.safetensors_header import MAX_HEADER_BYTES, sniff_foreign_format


def colliding_lengths() -> list[int]:
    """Header lengths (<= the cap) whose 8-byte prefix the sniffer alone would call foreign."""
    out = []
    for b0 in range(256):
        for b1 in range(256):
            for b2 in range(MAX_HEADER_BYTES >> 16):
                n = b0 | b1 << 8 | b2 << 16
                if n < 2:
                    continue
                try:
                    sniff_foreign_format(struct.pack("<Q", n))
                except E.LoraFileError:
                    out.append(n)
    return out


def test_the_colliding_lengths_include_the_reported_case() -> None:
    lengths = colliding_lengths()
    assert 896 in lengths  # 80 03: pickle protocol 3
    assert {0x80 | p << 8 for p in (2, 3, 4, 5)} <= set(lengths)
    assert ord("(") | ord("d") << 8 in lengths  # "(d": a protocol-0 pickle's start
    assert 0x8B1F in lengths  # gzip
    assert 500 <= len(lengths) <= 2000


def test_every_colliding_header_length_loads() -> None:
    base = small_diffusers_adapter()
    minimum = struct.unpack("<Q", base[:8])[0]
    lengths = [n for n in colliding_lengths() if n >= minimum]
    assert len(lengths) >= 500
    for n in lengths:
        data = with_header_length(base, n)
        assert struct.unpack("<Q", data[:8])[0] == n
        adapter = lora_io.load_adapter(data)
        assert adapter.format == "diffusers" and len(adapter.modules) == 2, n


def test_the_reported_896_byte_small_diffusers_adapter() -> None:
    data = with_header_length(small_diffusers_adapter(), 896)
    assert data[:2] == b"\x80\x03"
    header = lora_io.parse_header(data, len(data))
    assert header.header_length == 896
    assert lora_io.load_adapter(data).base_model.family == "sd1"


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_real_pickles_are_still_refused_as_pickles(protocol: int) -> None:
    data = pickle.dumps({"lora_A.weight": [1.0] * 64}, protocol=protocol)
    with pytest.raises(E.PickleFileError):
        lora_io.load_adapter(data)
