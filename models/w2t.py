"""``w2t``: canonicalise every LoRA module, then read the modules with a Transformer (after W2T).

W2T (arXiv 2603.15990, a follow-up of "Learning on LoRAs") removes the GL(r) symmetry before the
network instead of building it into the layers: per module, ``U = Q_u R_u`` and ``V = Q_v R_v``
(QR), then the SVD of the small core ``R_u R_v^T = A S B^T`` gives ``U V^T = (Q_u A) S (Q_v B)^T``
with orthonormal ``Q_u A``, ``Q_v B``: a form that depends only on the delta. What is left is a sign
per direction, fixed here by making each left singular vector's largest entry positive. So the
model is GL(r)-invariant wherever the singular values are distinct (they are, for trained LoRAs),
at the cost of an r x r SVD per module.

Each module becomes one token: its canonical left and right singular vectors (padded to
``max_rank`` directions) and its log singular values, through a Linear per shape group; then a
learned module embedding, a Transformer encoder, mean pooling and an MLP head (as the paper's
``transformer`` baseline, :mod:`models.module_transformer`, reads raw factors).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch, check_spec, group_to_spec_order, spec_groups
from models.mlp_block import MLPBlock
from models.module_transformer import ModuleTransformerConfig

_EPS = 1e-12


@dataclass(frozen=True)
class W2TConfig(ModuleTransformerConfig):
    """Canonical-factor Transformer hyperparameters: the ``transformer`` baseline's, same defaults."""


def canonical_factors(
    U: torch.Tensor, V: torch.Tensor, max_rank: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(left, right, s): U (..., n, r), V (..., m, r) -> (..., n, R), (..., m, R), (..., R).

    ``U V^T = left diag(s) right^T``, directions sorted by singular value, each left vector's
    largest-magnitude entry positive, zero-padded (or truncated) to ``R = max_rank`` directions.
    """
    q_u, r_u = torch.linalg.qr(U)  # (..., n, k_u), (..., k_u, r)
    q_v, r_v = torch.linalg.qr(V)  # (..., m, k_v), (..., k_v, r)
    a, s, b_h = torch.linalg.svd(r_u @ r_v.mT, full_matrices=False)  # core (..., k_u, k_v)
    left, right = q_u @ a, q_v @ b_h.mT  # (..., n, k), (..., m, k)
    live = (s > _EPS * s[..., :1].clamp_min(_EPS)).to(s.dtype)  # (..., k): drop null directions
    top = left.abs().argmax(dim=-2, keepdim=True)  # (..., 1, k)
    sign = torch.sign(torch.gather(left, -2, top)).clamp_min(0) * 2 - 1  # (..., 1, k), +-1
    left, right = left * sign * live[..., None, :], right * sign * live[..., None, :]
    s = s * live
    k = s.shape[-1]
    if k >= max_rank:
        return left[..., :max_rank], right[..., :max_rank], s[..., :max_rank]
    pad = max_rank - k
    return F.pad(left, (0, pad)), F.pad(right, (0, pad)), F.pad(s, (0, pad))


class W2T(nn.Module):
    """Transformer over per-module tokens of canonical factors: GL(r)-invariant (distinct s)."""

    to_spec_order: torch.Tensor  # buffer
    log_s_mean: torch.Tensor  # () buffer
    log_s_std: torch.Tensor  # () buffer

    def __init__(self, spec: LoraSpec, out_features: int, config: W2TConfig | None = None) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = c = config or W2TConfig()
        self.tokenizers = nn.ModuleList(
            nn.Linear((g.out_features + g.in_features + 1) * c.max_rank, c.d_model)
            for g in spec_groups(spec)
        )
        self.module_embedding = nn.Parameter(torch.randn(len(spec), c.d_model) * 0.02)  # (L, d)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.n_heads, dim_feedforward=c.ff_dim, dropout=c.dropout, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.head = MLPBlock(c.d_model, c.d_model, out_features, n_layers=2, dropout=c.dropout)
        self.register_buffer("to_spec_order", group_to_spec_order(spec), persistent=False)
        self.register_buffer("log_s_mean", torch.zeros(()))  # fitted: LoRA s are ~1e-3
        self.register_buffer("log_s_std", torch.ones(()))

    def _tokens(self, batch: LoraBatch) -> list[torch.Tensor]:
        """Per shape group: (B, L_g, (n + m + 1) * R) canonical features."""
        R = self.config.max_rank
        out = []
        for g in batch.groups:
            left, right, s = canonical_factors(g.U, g.V, R)  # (B, L_g, n, R), (.., m, R), (.., R)
            log_s = torch.where(s > 0, torch.log(s.clamp_min(_EPS)), torch.zeros_like(s))
            log_s = torch.where(s > 0, (log_s - self.log_s_mean) / self.log_s_std, log_s)
            out.append(torch.cat([left, right, log_s[..., None, :]], dim=-2).flatten(start_dim=2))
        return out

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        check_spec(self.spec, batch)
        tokens = [
            tok(feats) for tok, feats in zip(self.tokenizers, self._tokens(batch), strict=True)
        ]
        x = torch.cat(tokens, dim=1).index_select(1, self.to_spec_order)  # (B, L, d)
        x = self.encoder(x + self.module_embedding)  # (B, L, d)
        return self.head(x.mean(dim=1))  # (B, out)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Standardise log singular values with their training mean and spread."""
        check_spec(self.spec, batch)
        logs = []
        for g in batch.groups:
            _, _, s = canonical_factors(g.U, g.V, self.config.max_rank)
            logs.append(torch.log(s[s > 0]))
        values = torch.cat(logs)
        if values.numel() > 1:
            self.log_s_mean.copy_(values.mean())
            self.log_s_std.copy_(values.std().clamp_min(1e-3))
