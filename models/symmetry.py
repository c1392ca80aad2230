"""The LoRA symmetry as code: sample group elements, act on batches, measure (in)variance.

For every module i independently, ``R_i`` in GL(r) acts by ``(U_i, V_i) -> (U_i R_i, V_i R_i^{-T})``
and leaves the delta ``U_i V_i^T`` unchanged. Shipped as library code (e3nn style) so the tests and a
worker's start-up self-check measure invariance the same way.

    err = gl_invariance_error(model, batch.to(torch.float64))   # ~1e-15 for gl_net
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from models.lora_batch import LoraBatch


def sample_gl(
    *batch_shape: int,
    r: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    orthogonal: bool = False,
) -> torch.Tensor:
    """Well-conditioned random elements of GL(r), shape (*batch_shape, r, r).

    An orthogonal matrix (QR of a Gaussian, sign-fixed so it is Haar distributed) times
    ``diag(exp(uniform(-1, 1)))``: condition number at most e^2, so float64 round-off stays ~1e-15.
    With ``orthogonal=True`` only the O(r) factor is returned.
    """
    gauss = torch.randn(*batch_shape, r, r, generator=generator, dtype=dtype)
    q, rr = torch.linalg.qr(gauss)  # (..., r, r)
    q = q * torch.sign(torch.diagonal(rr, dim1=-2, dim2=-1)).unsqueeze(-2)
    if orthogonal:
        return q
    log_scale = torch.rand(*batch_shape, r, generator=generator, dtype=dtype) * 2 - 1  # (..., r)
    scale = torch.exp(log_scale)  # (..., r)
    return q * scale.unsqueeze(-2)  # q @ diag(scale)


def act_on_factors(
    U: torch.Tensor, V: torch.Tensor, R: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U R, V R^{-T})`` for ``U: (..., n, r)``, ``V: (..., m, r)``, ``R: (..., r, r)``."""
    return U @ R, V @ torch.linalg.inv(R).mT


def sample_gl_like(
    batch: LoraBatch, generator: torch.Generator | None = None, *, orthogonal: bool = False
) -> list[torch.Tensor]:
    """One independent group element per adapter and module: a (B, L_g, r, r) tensor per group."""
    return [
        sample_gl(
            g.U.shape[0],
            g.U.shape[1],
            r=g.max_rank,
            generator=generator,
            dtype=batch.dtype,
            orthogonal=orthogonal,
        ).to(batch.device)
        for g in batch.groups
    ]


def act_gl(batch: LoraBatch, Rs: list[torch.Tensor]) -> LoraBatch:
    """Apply ``(U, V) -> (U R, V R^{-T})`` group by group (``Rs`` from ``sample_gl_like``)."""
    pairs = [act_on_factors(g.U, g.V, R) for g, R in zip(batch.groups, Rs, strict=True)]
    return batch.with_factors([p[0] for p in pairs], [p[1] for p in pairs])


NonSymmetry = Literal["scale_u", "same_r"]


def act_non_symmetry(
    batch: LoraBatch,
    kind: NonSymmetry,
    *,
    module: int = 0,
    generator: torch.Generator | None = None,
) -> LoraBatch:
    """A transformation that changes the delta of one module (spec index ``module``).

    ``scale_u``: U -> 2U (delta doubles). ``same_r``: (U, V) -> (U R, V R) with a random GL element R,
    i.e. R where the symmetry needs R^{-T}. A model that ignores these is trivially constant there.
    """
    Us, Vs = [], []
    for g in batch.groups:
        U, V = g.U.clone(), g.V.clone()
        if module in g.module_index:
            j = g.module_index.index(module)
            if kind == "scale_u":
                U[:, j] = 2 * U[:, j]
            else:
                R = sample_gl(U.shape[0], r=g.max_rank, generator=generator, dtype=U.dtype).to(
                    U.device
                )
                U[:, j], V[:, j] = U[:, j] @ R, V[:, j] @ R
        Us.append(U)
        Vs.append(V)
    return batch.with_factors(Us, Vs)


def relative_change(before: torch.Tensor, after: torch.Tensor) -> float:
    """``||after - before|| / ||before||`` (Frobenius over the whole tensor)."""
    before, after = before.detach(), after.detach()
    change = torch.linalg.vector_norm(after - before)
    return float(change / torch.linalg.vector_norm(before).clamp_min(1e-300))


@torch.no_grad()
def gl_invariance_error(
    model: Callable[[LoraBatch], torch.Tensor],
    batch: LoraBatch,
    *,
    orthogonal: bool = False,
    seed: int = 0,
) -> float:
    """Relative output change of ``model`` (in eval mode) under one random GL (or O) element per module."""
    generator = torch.Generator().manual_seed(seed)
    moved = act_gl(batch, sample_gl_like(batch, generator, orthogonal=orthogonal))
    return relative_change(model(batch), model(moved))
