"""``mlp``: the raw-factor baseline (the paper's "MLP"): flatten every U_i and V_i, then an MLP.

Invariant to nothing: ``(U R, V R^{-T})`` is a different input for the same delta. Factors are
zero-padded to a fixed ``max_rank`` so the input width is fixed; a rank-r adapter and a padded one
with the same delta are different inputs here (padding is a convention, not an exact symmetry).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.lora_batch import LoraBatch, check_spec
from models.mlp_block import MLPBlock


@dataclass(frozen=True)
class FactorMLPConfig:
    """Raw-factor MLP hyperparameters (the paper's LLM defaults: hidden 256, 3 layers, dropout 0.1)."""

    max_rank: int = 16  # every module is padded to this many columns; higher ranks are refused
    hidden: int = 256
    n_layers: int = 3
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_config(self, positive=("max_rank", "hidden", "n_layers"))


class FactorMLP(nn.Module):
    """MLP on the concatenation of all padded ``[U_i; V_i]``, group by group (not invariant)."""

    def __init__(
        self, spec: LoraSpec, out_features: int, config: FactorMLPConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or FactorMLPConfig()
        n_features = sum(n + m for n, m in spec.shapes) * config.max_rank
        self.mlp = MLPBlock(
            n_features, config.hidden, out_features, config.n_layers, config.dropout
        )

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        check_spec(self.spec, batch)
        x = torch.cat(
            [g.stacked(self.config.max_rank).flatten(start_dim=1) for g in batch.groups], dim=1
        )
        return self.mlp(x)  # (B, Σ (n_i + m_i) R) -> (B, out)
