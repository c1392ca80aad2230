"""``transformer``: one token per LoRA module, a small Transformer encoder, mean-pooled, MLP head.

The LoG-version baseline of the paper, simplified: a Linear tokenizer per shape group on the
flattened, zero-padded ``[U_i; V_i]`` (the paper uses a SwiGLU MLP), a learned module embedding
(instead of sinusoidal positions), post-LN ``nn.TransformerEncoder`` layers with ``d_ff = d_model``
as in the paper, mean pooling (instead of flattening all tokens). Not equivariant to anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.lora_batch import LoraBatch, check_spec, group_to_spec_order, spec_groups
from models.mlp_block import MLPBlock


@dataclass(frozen=True)
class ModuleTransformerConfig:
    """Module-token Transformer hyperparameters (paper sweeps: d_model 128, 8 heads, d_ff = d_model)."""

    max_rank: int = 16
    d_model: int = 128
    n_heads: int = 8
    n_layers: int = 2
    ff_dim: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_config(self, positive=("max_rank", "d_model", "n_heads", "n_layers", "ff_dim"))
        if self.d_model % self.n_heads:
            raise ValueError(
                f"Invalid n_heads: {self.n_heads!r} (must divide d_model={self.d_model})"
            )


class ModuleTransformer(nn.Module):
    """Transformer over per-module tokens of raw factors (not invariant: a baseline)."""

    to_spec_order: torch.Tensor  # buffer

    def __init__(
        self, spec: LoraSpec, out_features: int, config: ModuleTransformerConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = c = config or ModuleTransformerConfig()
        self.tokenizers = nn.ModuleList(
            nn.Linear((g.out_features + g.in_features) * c.max_rank, c.d_model)
            for g in spec_groups(spec)
        )
        self.module_embedding = nn.Parameter(torch.randn(len(spec), c.d_model) * 0.02)  # (L, d)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, dim_feedforward=c.ff_dim, dropout=c.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.head = MLPBlock(c.d_model, c.d_model, out_features, n_layers=2, dropout=c.dropout)
        self.register_buffer("to_spec_order", group_to_spec_order(spec), persistent=False)

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        check_spec(self.spec, batch)
        R = self.config.max_rank
        tokens = [
            tok(g.stacked(R).flatten(start_dim=2))
            for tok, g in zip(self.tokenizers, batch.groups, strict=True)
        ]
        x = torch.cat(tokens, dim=1).index_select(1, self.to_spec_order)  # (B, L, d)
        x = self.encoder(x + self.module_embedding)  # (B, L, d)
        return self.head(x.mean(dim=1))  # (B, out)
