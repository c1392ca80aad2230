"""Tiny zoos built once per session; nothing binary is committed, everything is generated here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.zoo.tiny_zoo import CAUSAL_LM_COUNT, DIGITS_COUNT, MINILM_COUNT, build


@pytest.fixture(scope="session")
def digits_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "digits"
    assert build("digits", DIGITS_COUNT, out) == 0
    return out


@pytest.fixture(scope="session")
def minilm_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zoo") / "minilm-topics"
    assert build("minilm-topics", MINILM_COUNT, out) == 0
    return out


@pytest.fixture(scope="session")
def causal_lm_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real SmolLM2-135M finetunes at a few steps (the packaged model, dequantized once)."""
    out = tmp_path_factory.mktemp("zoo") / "causal-lm"
    assert build("causal-lm", CAUSAL_LM_COUNT, out) == 0
    return out
