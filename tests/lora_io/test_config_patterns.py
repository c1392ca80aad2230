"""Regression tests for what the reliability suite found in lora_io.

* rank/alpha patterns of adapter_config.json are regular expressions matched against module names
  taken from the file: patterns that backtrack exponentially hung the API thread for ever (found by
  the suite's mutated configs); they are now refused, and matching has a time budget;
* ``check_adapter`` (what the API now runs before storing an upload) refuses exactly what
  ``load_adapter`` refuses, with the same error class;
* the delta norms of the static checks use float32 Grams: same values as float64 to ~1e-6.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import lora_io
from harness.hostile_files import CASES
from harness.lora_files import safetensors_bytes
from lora_io import AdapterConfigError, LoraFileError, check_adapter, load_adapter
from lora_io.adapter_config import _pattern_key, pattern_problem
from lora_io.checks import delta_frobenius_norms


def _peft(layers: int = 2) -> bytes:
    rng = np.random.default_rng(0)
    t = {}
    for i in range(layers):
        for proj in ("query", "value"):
            base = f"base_model.model.encoder.layer.{i}.attention.self.{proj}"
            t[f"{base}.lora_A.weight"] = rng.normal(size=(2, 8)).astype("float32")
            t[f"{base}.lora_B.weight"] = rng.normal(size=(8, 2)).astype("float32")
    return safetensors_bytes(t)


@pytest.mark.parametrize(
    "pattern",
    [r"([a-z0-9._]|[a-z0-9._])*!", r"(.*)*!", r"(\w+\.?)+!", r"(a|aa)+$x", r"(.*.*)*x", r"(a)\1",
     ".*.*.*.*!", "x" * 600],
)  # fmt: skip
def test_catastrophic_patterns_are_refused_quickly(pattern: str) -> None:
    for field in ("rank_pattern", "alpha_pattern"):
        config = json.dumps({"r": 2, "lora_alpha": 4, field: {pattern: 2}}).encode()
        t0 = time.perf_counter()
        with pytest.raises(AdapterConfigError, match="pattern"):
            load_adapter(_peft(), config=config)
        assert time.perf_counter() - t0 < 1.0


def test_plain_patterns_keep_peft_semantics() -> None:
    assert pattern_problem("layer.1.attention.self.query") is None
    assert pattern_problem(r"layer\.\d+\.attention\.self\.query") is None
    assert pattern_problem(r"^(?!.*value).*") is None
    assert _pattern_key({"query": 1}, "encoder.layer.0.attention.self.query") == "query"
    assert (
        _pattern_key({"uery": 1}, "encoder.layer.0.attention.self.query") is None
    )  # whole parts only
    assert (
        _pattern_key({"^query": 1}, "encoder.layer.0.attention.self.query") is None
    )  # ^ = start of name
    assert (
        _pattern_key({r"layer\.1\..*query": 1}, "encoder.layer.1.attention.self.query") is not None
    )
    config = json.dumps(
        {"r": 2, "lora_alpha": 4, "alpha_pattern": {"layer.1.attention.self.query": 8}}
    )
    adapter = load_adapter(_peft(), config=config.encode())
    scales = {m.name: m.scale for m in adapter.modules}
    assert scales["encoder.layer.1.attention.self.query"] == 4.0
    assert scales["encoder.layer.0.attention.self.query"] == 2.0


@pytest.mark.parametrize(("name", "data", "error", "words"), CASES, ids=[c[0] for c in CASES])
def test_check_adapter_refuses_what_load_adapter_refuses(
    name: str, data: bytes, error: type, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "upload.safetensors"
    path.write_bytes(data)
    with pytest.raises(error) as info:
        check_adapter(path)
    assert words in str(info.value)


def test_check_adapter_accepts_valid_files(tmp_path: Path) -> None:
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_peft())
    check_adapter(path)
    check_adapter(path, config=b'{"r": 2, "lora_alpha": 4}')
    with pytest.raises(LoraFileError):
        check_adapter(path, config=b'{"r": 2, "rank_pattern": {"(.*)*x": 2}}')


def test_float32_gram_norms_match_float64() -> None:
    adapter = lora_io.load_adapter(_peft(4))
    ref = [
        float(np.linalg.norm(m.U.astype(np.float64) @ m.V.astype(np.float64).T))
        for m in adapter.modules
    ]
    np.testing.assert_allclose(delta_frobenius_norms(adapter), ref, rtol=1e-5)
