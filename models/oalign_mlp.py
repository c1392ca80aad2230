"""``mlp_oalign``: the paper's "MLP + O-Align": rotate each module onto a template LoRA, flatten, MLP.

For each module, orthogonal Procrustes finds ``Q`` in O(r) minimising ``||[U; V] Q - [U_t; V_t]||_F``
(``Q = W Z^T`` from the SVD ``[U; V]^T [U_t; V_t] = W S Z^T``); then ``(U, V) -> (U Q, V Q)``,
which keeps the delta because ``Q^{-T} = Q``. The result is invariant to ``(U, V) -> (U R, V R)`` with
R orthogonal, and only approximately: when ``[U; V]^T [U_t; V_t]`` is rank-deficient (e.g. a
template of lower rank than the adapter) Q is not unique. A general GL element is not undone.

The template is one training adapter, set by ``set_template(batch, index)`` or ``fit_to_data``
(the adapter of largest total rank, so the cross term is full rank whenever possible), and stored
as buffers, so a checkpoint carries it. Factors are zero-padded to ``max_rank`` (not exact here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.lora_batch import LoraBatch, check_spec, spec_groups
from models.mlp_block import MLPBlock


@dataclass(frozen=True)
class OAlignMLPConfig:
    """O-aligned MLP hyperparameters (paper's LLM MLP defaults)."""

    max_rank: int = 16
    hidden: int = 256
    n_layers: int = 3
    dropout: float = 0.1

    def __post_init__(self) -> None:
        check_config(self, positive=("max_rank", "hidden", "n_layers"))


class OAlignMLP(nn.Module):
    """MLP on Procrustes-aligned factors. Invariant to O(r) per module (approximately), not GL(r)."""

    has_template: torch.Tensor  # () bool buffer

    def __init__(
        self, spec: LoraSpec, out_features: int, config: OAlignMLPConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or OAlignMLPConfig()
        self.n_groups = len(spec_groups(spec))
        for gi, g in enumerate(spec_groups(spec)):
            shape = (len(g.module_index), g.out_features + g.in_features, config.max_rank)
            self.register_buffer(f"template_{gi}", torch.zeros(shape))  # (L_g, n + m, R)
        self.register_buffer("has_template", torch.zeros((), dtype=torch.bool))
        n_features = sum(n + m for n, m in spec.shapes) * config.max_rank
        self.mlp = MLPBlock(
            n_features, config.hidden, out_features, config.n_layers, config.dropout
        )

    def templates(self) -> list[torch.Tensor]:
        return [getattr(self, f"template_{gi}") for gi in range(self.n_groups)]

    @torch.no_grad()
    def set_template(self, batch: LoraBatch, index: int = 0) -> None:
        """Use adapter ``index`` of ``batch`` (a training adapter) as the alignment template."""
        check_spec(self.spec, batch)
        for template, g in zip(self.templates(), batch.groups, strict=True):
            template.copy_(g.stacked(self.config.max_rank)[index].to(template))
        self.has_template.fill_(True)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Set the template to the training adapter of largest total rank (the first such)."""
        total_rank = batch.ranks.clamp(max=self.config.max_rank).sum(dim=1)  # (B,)
        self.set_template(batch, int(torch.argmax(total_rank)))

    def aligned_factors(self, batch: LoraBatch) -> list[torch.Tensor]:
        """Per group ``[U Q; V Q]``, (B, L_g, n + m, R), with Q the Procrustes rotation per module."""
        check_spec(self.spec, batch)
        if not bool(self.has_template):
            raise RuntimeError(
                "mlp_oalign has no template: call set_template(batch) or fit_to_data(batch) first"
            )
        out = []
        for template, g in zip(self.templates(), batch.groups, strict=True):
            X = g.stacked(self.config.max_rank)  # (B, L_g, n + m, R)
            W, _, Zh = torch.linalg.svd(X.mT @ template.to(X.dtype))  # cross term (B, L_g, R, R)
            out.append(X @ (W @ Zh))  # (B, L_g, n + m, R)
        return out

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        x = torch.cat([a.flatten(start_dim=1) for a in self.aligned_factors(batch)], dim=1)
        return self.mlp(x)  # (B, Σ (n_i + m_i) R) -> (B, out)
