"""Files that share a header are parsed once, yet every file is still checked on its own.

A zoo or a hub's uploads of one recipe share their safetensors header byte for byte, so reading
caches the parsed header; what differs per file (its size, its numbers) must still be checked.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from harness.lora_files import peft_adapter
from lora_io import errors as E
from lora_io import load_adapter


def _data_start(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def test_same_header_different_numbers_give_each_file_its_own_factors() -> None:
    first, second = peft_adapter(seed=1), peft_adapter(seed=2)
    assert first[: _data_start(first)] == second[: _data_start(second)]  # one shared header
    a, b = load_adapter(first), load_adapter(second)
    assert not np.array_equal(a.modules[0].U, b.modules[0].U)
    assert a.sha256 != b.sha256
    assert np.array_equal(load_adapter(first).modules[3].V, a.modules[3].V)


def test_a_cached_header_does_not_excuse_a_bad_file() -> None:
    good = peft_adapter(seed=3)
    load_adapter(good)  # its header is cached now
    with pytest.raises(E.HeaderError, match="after the last tensor"):
        load_adapter(good + b"\0" * 8)
    with pytest.raises(E.HeaderError, match="truncated"):
        load_adapter(good[:-4])
    start = _data_start(good)
    nan = good[:start] + np.float32(np.nan).tobytes() + good[start + 4 :]
    with pytest.raises(E.NonFiniteWeightsError, match="NaN"):
        load_adapter(nan)
