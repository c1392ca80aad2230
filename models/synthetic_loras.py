"""Random LoRA factors for tests, self-checks and benchmarks (GPT-3-shaped synthetic LoRAs).

Entries are N(0, std^2). Generated on the host with a seeded generator, so a given seed gives the
same batch on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch


def random_lora_factors(
    spec: LoraSpec,
    ranks: Sequence[Sequence[int]],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    std: float = 1.0,
) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """``factors[b][i] = (U (n_i, r), V (m_i, r))`` with ``r = ranks[b][i]`` (any rank per module)."""
    g = torch.Generator().manual_seed(seed)
    return [
        [
            (
                torch.randn(n, r, generator=g, dtype=dtype) * std,
                torch.randn(m, r, generator=g, dtype=dtype) * std,
            )
            for (n, m), r in zip(spec.shapes, row, strict=True)
        ]
        for row in ranks
    ]


def random_lora_batch(
    spec: LoraSpec,
    batch_size: int,
    rank: int | Sequence[Sequence[int]],
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    std: float = 1.0,
) -> LoraBatch:
    """A random ``LoraBatch``: one rank for everything, or ``rank[b][i]`` per adapter and module."""
    ranks = [[rank] * len(spec)] * batch_size if isinstance(rank, int) else rank
    factors = random_lora_factors(spec, ranks, seed=seed, dtype=dtype, std=std)
    return LoraBatch.from_factors(spec, factors, dtype=dtype)
