"""The GL-equivariant layers of GL-net, exactly as the paper's official code defines them.

Notation: B adapters, L modules, h hidden rows, r rank. Every layer acts on the row side of the
factors (left multiplication, row gates), while the symmetry acts on the column side: for each module
i, ``R_i`` in GL(r) maps ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})``. Left and right multiplications
commute, and gates computed from ``U_i V_i^T`` do not see ``R_i``, hence equivariance. Rank never
enters a parameter shape, so one instance serves every rank, and mixed ranks via zero padding
(zero columns stay zero through every layer).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch, group_to_spec_order, pad_columns, spec_groups

NORM_FLOOR = 1e-8
"""Added to squared norms before the log in ``pool="norms"``: an untrained module (B = 0) gives a
finite feature. Inputs are scaled to typical delta norm 1 (``input_norm="fitted"``), so real
squared norms are far above it."""


def _gaussian(n_modules: int, rows: int, cols: int) -> nn.Parameter:
    """(n_modules, rows, cols) weights drawn N(0, 1/cols), the paper's init (unit gain, no bias)."""
    return nn.Parameter(torch.randn(n_modules, rows, cols) / math.sqrt(cols))


class GLInputLinear(nn.Module):
    """First layer: ``U_i <- P_i U_i``, ``V_i <- Q_i V_i`` with ``P_i: (h, n_i)``, ``Q_i: (h, m_i)``.

    Equivariant to ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})``, R_i in GL(r_i) per module:
    ``P_i (U_i R_i) = (P_i U_i) R_i``. No bias (the only GL-fixed vector is 0) and no U/V mixing (the
    standard and dual representations of GL(r) are not isomorphic). Init N(0, 1/n_i), no bias, as in
    the paper's code. Parameters are stacked per shape group so a group is one batched matmul.
    """

    to_spec_order: torch.Tensor  # buffer

    def __init__(self, spec: LoraSpec, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        groups = spec_groups(spec)
        self.P = nn.ParameterList(
            _gaussian(len(g.module_index), hidden, g.out_features) for g in groups
        )
        self.Q = nn.ParameterList(
            _gaussian(len(g.module_index), hidden, g.in_features) for g in groups
        )
        self.register_buffer("to_spec_order", group_to_spec_order(spec), persistent=False)

    def forward(self, batch: LoraBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, V), both (B, L, h, r_max) in spec order; narrower groups are zero-padded to r_max."""
        r = batch.max_rank
        groups = batch.groups
        # (L_g, h, n) @ (B, L_g, n, r_g) -> (B, L_g, h, r_g), zero-padded to (B, L_g, h, r)
        Us = [pad_columns(P @ g.U, r) for P, g in zip(self.P, groups, strict=True)]
        Vs = [pad_columns(Q @ g.V, r) for Q, g in zip(self.Q, groups, strict=True)]
        U = torch.cat(Us, dim=1).index_select(1, self.to_spec_order)  # (B, L, h, r)
        V = torch.cat(Vs, dim=1).index_select(1, self.to_spec_order)  # (B, L, h, r)
        return U, V


class GLNonlinearity(nn.Module):
    """Row gates: ``U <- 1[(U V^T) 1 > 0] * U``, ``V <- 1[(1^T U V^T)^T > 0] * V``, per module.

    Equivariant to ``(U, V) -> (U R, V R^{-T})``: the gates depend only on the invariant ``U V^T``,
    and gating rows is a left multiplication by a diagonal 0/1 matrix. Computed the fast way,
    ``U (V^T 1)`` and ``V (U^T 1)``, in O(h r) instead of forming the h x h product.
    """

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        row_sums = U @ V.sum(dim=-2, keepdim=True).mT  # (B, L, h, 1) = (U V^T) 1
        col_sums = V @ U.sum(dim=-2, keepdim=True).mT  # (B, L, h, 1) = (U V^T)^T 1
        return U * (row_sums > 0).to(U.dtype), V * (col_sums > 0).to(V.dtype)


class GLDropout(nn.Module):
    """Row dropout on U and on V with independent masks, non-inverted (eval scales by 1 - p).

    Equivariant to ``(U, V) -> (U R, V R^{-T})`` in both modes: a row mask or a scalar is a left
    multiplication. Non-inverted, as in the paper's ``EquivDropout``, so checkpoints behave alike.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.p == 0:
            return U, V
        if not self.training:
            return U * (1 - self.p), V * (1 - self.p)
        keep_u = torch.rand(*U.shape[:-1], 1, device=U.device) > self.p  # (B, L, h, 1)
        keep_v = torch.rand(*V.shape[:-1], 1, device=V.device) > self.p  # (B, L, h, 1)
        return U * keep_u.to(U.dtype), V * keep_v.to(V.dtype)


class GLHiddenLinear(nn.Module):
    """``U_i <- A_i U_i``, ``V_i <- B_i V_i`` with one (h, h) pair per module, init N(0, 1/h), no bias.

    Equivariant to ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})`` for the same reason as the input layer.
    """

    def __init__(self, n_modules: int, hidden: int) -> None:
        super().__init__()
        self.A = _gaussian(n_modules, hidden, hidden)  # (L, h, h)
        self.B = _gaussian(n_modules, hidden, hidden)  # (L, h, h)

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A @ U, self.B @ V  # (B, L, h, r) each


class GLHiddenBlock(nn.Module):
    """One further GL-net layer: nonlinearity, dropout, equivariant linear (the code's order).

    Equivariant to ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})``, as a composition of equivariant maps.
    """

    def __init__(self, n_modules: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.nonlinearity = GLNonlinearity()
        self.dropout = GLDropout(dropout)
        self.linear = GLHiddenLinear(n_modules, hidden)

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        U, V = self.nonlinearity(U, V)
        U, V = self.dropout(U, V)
        return self.linear(U, V)


class GLInvariantHead(nn.Module):
    """Invariant readout: ``F_i = U_i V_i^T`` (h x h) per module, then an MLP on the concatenation.

    Invariant to ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})``: ``(U R)(V R^{-T})^T = U V^T``.
    ``pool="flatten"`` feeds all L h^2 entries (the paper's default head); ``pool="mean"`` feeds the
    mean entry of each F_i (the paper's CLIP head), computed as ``(1^T U)(V^T 1) / h^2``.
    ``pool="norms"`` (ours, beyond the paper) feeds the log norm of every row and every column of
    each F_i and log ||F_i||_F: L (2h + 1) features instead of L h^2. With one layer a column norm
    is ``||P_i dW_i q_j||``, the response of the delta to a learned input direction ``q_j``: what a
    backdoor changes (a trigger's hidden state mapped somewhere new), with h times fewer head
    weights to fit from a few hundred adapters. Norms come from r x r Gram matrices (never h x h):
    ``||F e_j||^2 = v_j^T (U^T U) v_j`` for row ``v_j`` of V, invariant as ``U^T U -> R^T U^T U R``
    and ``v_j -> R^{-1} v_j``.
    MLP: [Dropout] -> Linear -> LayerNorm -> [Dropout] -> ReLU -> Linear, as in the LLM code.
    """

    def __init__(
        self,
        n_modules: int,
        hidden: int,
        head_dim: int,
        out_features: int,
        dropout: float,
        pool: Literal["flatten", "mean", "norms"],
    ) -> None:
        super().__init__()
        self.pool = pool
        n_features = {
            "flatten": n_modules * hidden * hidden,
            "mean": n_modules,
            "norms": n_modules * (2 * hidden + 1),
        }[pool]
        self.dropout = nn.Dropout(dropout)
        self.linear1 = nn.Linear(n_features, head_dim)
        self.norm = nn.LayerNorm(head_dim)
        self.linear2 = nn.Linear(head_dim, out_features)

    def invariant_features(self, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """The GL-invariant features fed to the MLP, (B, L*h*h), (B, L) or (B, L*(2h+1))."""
        if self.pool == "mean":
            h = U.shape[-2]
            return (U.sum(dim=-2) * V.sum(dim=-2)).sum(dim=-1) / (h * h)  # (B, L)
        if self.pool == "norms":
            rows = ((U @ (V.mT @ V)) * U).sum(dim=-1)  # (B, L, h): ||F e_a^T||^2 per row a
            cols = ((V @ (U.mT @ U)) * V).sum(dim=-1)  # (B, L, h): ||F e_j||^2 per column j
            frob = rows.sum(dim=-1, keepdim=True)  # (B, L, 1): ||F||_F^2
            squares = torch.cat([rows, cols, frob], dim=-1).clamp_min(0)  # (B, L, 2h+1)
            return 0.5 * torch.log(squares + NORM_FLOOR).flatten(start_dim=1)  # (B, L*(2h+1))
        return (U @ V.mT).flatten(start_dim=1)  # (B, L, h, h) -> (B, L*h*h)

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.invariant_features(U, V))
        x = self.dropout(self.norm(self.linear1(x)))  # (B, d)
        return self.linear2(torch.relu(x))  # (B, out)
