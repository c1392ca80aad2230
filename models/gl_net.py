"""GL-net (Putterman et al., "Learning on LoRAs", arXiv 2410.04207): a GL(r)-invariant metanetwork.

    input linear (P_i U_i, Q_i V_i)  ->  [nonlinearity -> dropout -> linear] x (n_layers - 1)
        ->  F_i = U_i V_i^T (h x h)  ->  MLP head

Invariant to ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})`` for an independent R_i in GL(r) per module.
The hot path loops over shape groups only and never forms an out x in matrix: the cost per module is
O(h (n + m) r + h^2 r) per layer.

With ``n_layers=1`` there is no nonlinearity and ``F_i = P_i (U_i V_i^T) Q_i^T``: a learned bilinear
sketch of every delta, then an MLP.

The head reads F_i one of three ways (``pool``): every entry (the paper's default), the mean entry
(the paper's CLIP head), or, ours, the log norm of every row and column of F_i (with one layer,
``||P_i dW_i q_j||``: how strongly the delta responds to learned input directions). On
minilm-topics harmful detection the norm head is what makes GL-net learn from a few hundred
adapters (docs/research.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.gl_layers import GLHiddenBlock, GLInputLinear, GLInvariantHead
from models.lora_batch import LoraBatch, check_spec


@dataclass(frozen=True)
class GLNetConfig:
    """GL-net hyperparameters (defaults: the paper's LLM setting, with a smaller head).

    ``input_norm="fitted"``: ``fit_to_data`` stores, per module, the median over training adapters of
    ``||U_i V_i^T||_F`` (computed as ``sqrt(tr(U^T U V^T V))``, never forming the delta), and forward
    divides U_i and V_i by its square root, so every delta enters with a typical norm of 1. A fixed
    positive scalar per module commutes with R_i, so invariance is untouched; it only conditions
    the optimisation (LoRA deltas are ~1e-3 in norm). Until fitted the scale is 1 (identity).
    """

    hidden: int = 16  # h, the paper's hidden_dim_equiv
    n_layers: int = 2  # equivariant linear layers; n_layers - 1 nonlinearities
    head_dim: int = 64  # d, width of the invariant head's MLP
    dropout: float = 0.1  # row dropout between layers and dropout in the head
    pool: Literal["flatten", "mean", "norms"] = "flatten"
    input_norm: Literal["none", "fitted"] = "fitted"

    def __post_init__(self) -> None:
        check_config(self, positive=("hidden", "n_layers", "head_dim"))
        if self.pool not in ("flatten", "mean", "norms"):
            raise ValueError(f"Invalid pool: {self.pool!r} (flatten, mean or norms)")
        if self.input_norm not in ("none", "fitted"):
            raise ValueError(f"Invalid input_norm: {self.input_norm!r} (none or fitted)")


class GLNet(nn.Module):
    """GL-net over the modules of one ``LoraSpec``; any rank, mixed ranks, one output row per adapter."""

    input_scale: torch.Tensor  # (L,) buffer

    def __init__(
        self, spec: LoraSpec, out_features: int, config: GLNetConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or GLNetConfig()
        n_modules = len(spec)
        self.input_layer = GLInputLinear(spec, config.hidden)
        self.blocks = nn.ModuleList(
            GLHiddenBlock(n_modules, config.hidden, config.dropout)
            for _ in range(config.n_layers - 1)
        )
        self.head = GLInvariantHead(
            n_modules, config.hidden, config.head_dim, out_features, config.dropout, config.pool
        )
        self.register_buffer("input_scale", torch.ones(n_modules))  # (L,) fitted ||U_i V_i^T||_F

    def trunk(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The equivariant trunk: (U, V), each rank-major (L, B, r_max, h), before the head."""
        check_spec(self.spec, batch)
        U, V = self.input_layer(batch)  # (L, B, r, h)
        root = self.input_scale.sqrt().to(U.dtype)[:, None, None, None]  # (L, 1, 1, 1)
        U, V = U / root, V / root
        for block in self.blocks:
            U, V = block(U, V)  # (L, B, r, h)
        return U, V

    def equivariant_features(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The trunk's (U, V) as (B, L, h, r_max) views, the shape the symmetry acts on."""
        U, V = self.trunk(batch)
        return U.permute(1, 0, 3, 2), V.permute(1, 0, 3, 2)

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        return self.head(*self.trunk(batch))  # (B, out)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Fit the per-module input scale on training adapters (no-op when ``input_norm="none"``)."""
        check_spec(self.spec, batch)
        if self.config.input_norm == "none":
            return
        scale = torch.ones_like(self.input_scale)
        for g in batch.groups:
            gram = (g.U.mT @ g.U) * (g.V.mT @ g.V)  # (B, L_g, r, r): U^T U ∘ V^T V, both symmetric
            norms = gram.sum(dim=(-2, -1)).clamp_min(0).sqrt()  # (B, L_g) = ||U V^T||_F
            median = norms.median(dim=0).values.to(scale)  # (L_g,)
            scale[list(g.module_index)] = torch.where(median > 0, median, torch.ones_like(median))
        self.input_scale.copy_(scale)
