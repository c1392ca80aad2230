"""The GL-equivariant layers of GL-net, exactly as the paper's official code defines them.

Notation: B adapters, L modules, h hidden rows, r rank. Every layer acts on the row side of the
factors (left multiplication, row gates), while the symmetry acts on the column side: for each module
i, ``R_i`` in GL(r) maps ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})``. Left and right multiplications
commute, and gates computed from ``U_i V_i^T`` do not see ``R_i``, hence equivariance. Rank never
enters a parameter shape, so one instance serves every rank, and mixed ranks via zero padding
(zero columns stay zero through every layer).

Layout: the trunk's features are rank-major, (L, B, r, h) contiguous: module i's features for the
whole batch form one (B r, h) matrix (the transposed factors of every adapter stacked), so every
linear layer is one ``torch.bmm`` over modules with the batch as its rows. Multiplying each adapter
on its own ((h, n) x (n, r), B times, re-reading the weight each time) is what kept GL-net 40-110x
off this machine's limit; with the batch stacked the first layer reads P_i once per batch. The
head turns back to (B, ...).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.lora_batch import (
    LoraBatch,
    group_to_spec_order,
    pad_rows,
    rank_major,
    spec_groups,
)

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
    the paper's code. Parameters are stacked per shape group, so a group is one ``bmm`` over its modules
    with the whole batch in the columns.
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
        """(U, V), both rank-major (L, B, r_max, h) in spec order; narrow groups zero-padded."""
        r = batch.max_rank
        Us = [_weigh(P, g.U, r) for P, g in zip(self.P, batch.groups, strict=True)]
        Vs = [_weigh(Q, g.V, r) for Q, g in zip(self.Q, batch.groups, strict=True)]
        if len(Us) == 1:  # one shape group: already in spec order
            return Us[0], Vs[0]
        U = torch.cat(Us).index_select(0, self.to_spec_order)  # (L, B, r, h)
        V = torch.cat(Vs).index_select(0, self.to_spec_order)  # (L, B, r, h)
        return U, V


def _weigh(weight: torch.Tensor, factor: torch.Tensor, r: int) -> torch.Tensor:
    """``weight_i @ factor_i`` of every module and adapter, transposed: (L_g, B, r, h), padded to r.

    ``weight``: (L_g, h, n); ``factor``: (B, L_g, n, r_g), a free rank-major view when stored so.
    """
    rows = rank_major(factor)  # (L_g, B, r_g, n)
    lg, b, rg, n = rows.shape
    out = torch.bmm(rows.view(lg, b * rg, n), weight.mT)  # (L_g, B r_g, h): the batch as rows
    return pad_rows(out.view(lg, b, rg, -1), r)


class GLNonlinearity(nn.Module):
    """Row gates: ``U <- 1[(U V^T) 1 > 0] * U``, ``V <- 1[(1^T U V^T)^T > 0] * V``, per module.

    Equivariant to ``(U, V) -> (U R, V R^{-T})``: the gates depend only on the invariant ``U V^T``,
    and gating rows is a left multiplication by a diagonal 0/1 matrix. Computed the fast way,
    ``U (V^T 1)`` and ``V (U^T 1)``, in O(h r) instead of forming the h x h product.
    """

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # U, V: (L, B, r, h); a row of U_i is a column here
        row_sums = (U * V.sum(dim=-1, keepdim=True)).sum(dim=-2, keepdim=True)  # (L, B, 1, h)
        col_sums = (V * U.sum(dim=-1, keepdim=True)).sum(dim=-2, keepdim=True)  # (L, B, 1, h)
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
        L, B, _, h = U.shape
        keep_u = torch.rand(L, B, 1, h, device=U.device) > self.p  # (L, B, 1, h): whole rows of U_i
        keep_v = torch.rand(L, B, 1, h, device=V.device) > self.p  # (L, B, 1, h)
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
        return _mix_rows(self.A, U), _mix_rows(self.B, V)  # (L, B, r, h) each


def _mix_rows(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``weight_i @ x_i`` per module, transposed: (L, h, h), (L, B, r, h) -> (L, B, r, h), one bmm."""
    lg, b, r, h = x.shape
    return torch.bmm(x.reshape(lg, b * r, h), weight.mT).view(lg, b, r, -1)


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
        """The GL-invariant features fed to the MLP, (B, L*h*h), (B, L) or (B, L*(2h+1)).

        ``U``, ``V``: rank-major (L, B, r, h), as the trunk leaves them.
        """
        if self.pool == "mean":
            h = U.shape[-1]
            return (U.sum(dim=-1) * V.sum(dim=-1)).sum(dim=-1).T / (h * h)  # (L, B) -> (B, L)
        L, B, r, h = U.shape
        Ut, Vt = U.reshape(L * B, r, h), V.reshape(L * B, r, h)  # U_i^T, V_i^T of every adapter
        if self.pool == "norms":
            # ||F e_a^T||^2 = u_a^T (V^T V) u_a: with U^T stacked, (V^T V) U^T then a column sum
            rows = ((Vt @ Vt.mT @ Ut) * Ut).sum(dim=-2).view(L, B, h)  # per row a of F
            cols = ((Ut @ Ut.mT @ Vt) * Vt).sum(dim=-2).view(L, B, h)  # per column j of F
            frob = rows.sum(dim=-1, keepdim=True)  # (L, B, 1): ||F||_F^2
            squares = torch.cat([rows, cols, frob], dim=-1).clamp_min(0)  # (L, B, 2h+1)
            features = 0.5 * torch.log(squares + NORM_FLOOR)
            return features.transpose(0, 1).reshape(B, -1)  # (B, L*(2h+1))
        F = (Ut.mT @ Vt).view(L, B, h, h)  # U_i V_i^T
        return F.transpose(0, 1).reshape(B, -1)  # (B, L*h*h)

    def forward(self, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.invariant_features(U, V))
        x = self.dropout(self.norm(self.linear1(x)))  # (B, d)
        return self.linear2(torch.relu(x))  # (B, out)
