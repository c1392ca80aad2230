"""``mlp_dense``: the paper's "MLP + Dense": form every delta ``U_i V_i^T``, flatten, MLP.

GL-invariant and complete (it sees the whole delta), but memory grows with Σ n_i m_i per adapter:
about 58 GB per adapter at GPT-3 175B shapes. So the model computes what a batch would need first
and refuses with ``DenseMemoryError`` above ``max_dense_bytes``; ``dense_memory_bytes`` gives the
same number to benchmarks without building anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.lora_batch import LoraBatch, check_spec
from models.mlp_block import MLPBlock

DEFAULT_MAX_DENSE_BYTES = 2 << 30
"""Default cap (2 GiB) on the dense deltas of one batch, and on the first layer's weights."""


class DenseMemoryError(MemoryError, ValueError):
    """Forming the dense deltas (or the first layer on them) would need more memory than the cap."""


def dense_memory_bytes(spec: LoraSpec, batch_size: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of the dense deltas of ``batch_size`` adapters: ``batch_size * Σ n_i m_i * itemsize``."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    return batch_size * sum(n * m for n, m in spec.shapes) * itemsize


def _human_bytes(n_bytes: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.2f} {unit} ({n_bytes:,} bytes)"
    return f"{n_bytes:,} bytes"


@dataclass(frozen=True)
class DenseMLPConfig:
    """Dense-delta MLP hyperparameters (the paper runs it at hidden 16 because its input is huge)."""

    hidden: int = 16
    n_layers: int = 3
    dropout: float = 0.1
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES

    def __post_init__(self) -> None:
        check_config(self, positive=("hidden", "n_layers", "max_dense_bytes"))


class DenseMLP(nn.Module):
    """MLP on all flattened ``U_i V_i^T`` (group by group). Invariant to GL(r) per module."""

    def __init__(
        self, spec: LoraSpec, out_features: int, config: DenseMLPConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or DenseMLPConfig()
        n_features = sum(n * m for n, m in spec.shapes)
        weight_bytes = n_features * config.hidden * torch.empty(()).element_size()
        if weight_bytes > config.max_dense_bytes:
            raise DenseMemoryError(
                f"mlp_dense's first layer ({n_features:,} dense-delta inputs x hidden {config.hidden}) would "
                f"need {_human_bytes(weight_bytes)}, above max_dense_bytes={_human_bytes(config.max_dense_bytes)}; "
                "use gl_net or mlp_svd, which never form U V^T"
            )
        self.mlp = MLPBlock(
            n_features, config.hidden, out_features, config.n_layers, config.dropout
        )

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        check_spec(self.spec, batch)
        need = dense_memory_bytes(self.spec, batch.batch_size, batch.dtype)
        if need > self.config.max_dense_bytes:
            raise DenseMemoryError(
                f"mlp_dense would form {batch.batch_size} x {sum(n * m for n, m in self.spec.shapes):,} "
                f"dense-delta entries = {_human_bytes(need)}, above max_dense_bytes={_human_bytes(self.config.max_dense_bytes)}; "
                "lower the batch size, raise the cap, or use gl_net / mlp_svd (they never form U V^T)"
            )
        # per group (B, L_g, n, r) @ (B, L_g, r, m) -> (B, L_g, n, m) -> (B, L_g * n * m)
        deltas = [(g.U @ g.V.mT).flatten(start_dim=1) for g in batch.groups]
        return self.mlp(torch.cat(deltas, dim=1))  # (B, out)
