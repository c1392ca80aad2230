"""Shared specs for the models tests; every batch is generated (nothing binary in git)."""

from __future__ import annotations

import pytest
import torch

from lora_io.lora_spec import LoraSpec, ModuleShape

SMALL_SPEC = LoraSpec(
    (
        ModuleShape("layers.0.q_proj", 24, 16),
        ModuleShape("layers.0.o_proj", 16, 24),
        ModuleShape("layers.1.q_proj", 24, 16),
        ModuleShape("layers.1.mlp", 20, 12),
    )
)
"""Four modules in three shape groups; the (24, 16) group is split around another module."""

OTHER_SPEC = LoraSpec(
    (ModuleShape("layers.0.q_proj", 24, 16), ModuleShape("layers.0.v_proj", 24, 16))
)
"""A different spec, for the spec-mismatch errors."""


@pytest.fixture(autouse=True)
def _one_thread_and_seed() -> None:
    """One thread (the test machine shares its cores) and a fixed seed for parameter init."""
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def small_spec() -> LoraSpec:
    return SMALL_SPEC


@pytest.fixture
def other_spec() -> LoraSpec:
    return OTHER_SPEC
