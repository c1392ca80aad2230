"""``mlp_svd``: the paper's "MLP + SVD": singular values of every delta (QR trick), then an MLP.

GL-invariant but not complete: it keeps the spectrum of each ``U_i V_i^T`` and drops the singular
vectors. Each module contributes its ``max_rank`` largest singular values (zero-padded below, the
smallest dropped above). Features are standardised with statistics fitted on training adapters
(``fit_to_data``; LoRA singular values are ~1e-3, too small for a plain Linear + LayerNorm), a
fixed affine map after invariant features, so invariance is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.feature_standardizer import FeatureStandardizer
from models.lora_batch import LoraBatch, check_spec
from models.lora_spectrum import top_singular_values
from models.mlp_block import MLPBlock


@dataclass(frozen=True)
class SVDMLPConfig:
    """Singular-value MLP hyperparameters (paper's LLM MLP defaults)."""

    max_rank: int = 16  # singular values kept per module
    hidden: int = 256
    n_layers: int = 3
    dropout: float = 0.1
    standardize: bool = True

    def __post_init__(self) -> None:
        check_config(self, positive=("max_rank", "hidden", "n_layers"))


class SVDMLP(nn.Module):
    """MLP on the top singular values of every ``U_i V_i^T``. Invariant to GL(r) per module."""

    def __init__(
        self, spec: LoraSpec, out_features: int, config: SVDMLPConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or SVDMLPConfig()
        n_features = len(spec) * config.max_rank
        self.standardizer = FeatureStandardizer(n_features)
        self.mlp = MLPBlock(
            n_features, config.hidden, out_features, config.n_layers, config.dropout
        )

    def features(self, batch: LoraBatch) -> torch.Tensor:
        """Top-``max_rank`` singular values of every module, (B, L * max_rank), group by group."""
        check_spec(self.spec, batch)
        k = self.config.max_rank
        return torch.cat(
            [top_singular_values(g.U, g.V, k).flatten(start_dim=1) for g in batch.groups], dim=1
        )

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        x = self.features(batch)  # (B, L * R)
        if self.config.standardize:
            x = self.standardizer(x)
        return self.mlp(x)  # (B, out)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Fit the feature standardisation on training adapters."""
        if self.config.standardize:
            self.standardizer.fit(self.features(batch))
