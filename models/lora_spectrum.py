"""Singular values of a LoRA delta ``U V^T`` from the small QR factors, never the dense matrix.

``U = Q1 R1`` and ``V = Q2 R2`` give ``U V^T = Q1 (R1 R2^T) Q2^T`` with orthonormal Q1, Q2, so the
nonzero singular values of the (out x in) delta are those of the (r x r) core ``R1 R2^T``: cost
O((n + m) r^2 + r^3) instead of O(n m r). GL-invariant: ``(U R)(V R^{-T})^T = U V^T``. Zero padding
columns leave ``R1 R2^T`` unchanged apart from zero rows/columns, so padded ranks are exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lora_singular_values(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Singular values of ``U V^T``, descending: U (..., n, r), V (..., m, r) -> (..., min(n, m, r))."""
    R1 = torch.linalg.qr(U, mode="r").R  # (..., min(n, r), r)
    R2 = torch.linalg.qr(V, mode="r").R  # (..., min(m, r), r)
    return torch.linalg.svdvals(R1 @ R2.mT)  # (..., min(n, m, r))


def top_singular_values(U: torch.Tensor, V: torch.Tensor, k: int) -> torch.Tensor:
    """The k largest singular values of ``U V^T``, zero-padded (or truncated) to exactly k, (..., k)."""
    s = lora_singular_values(U, V)
    return s[..., :k] if s.shape[-1] >= k else F.pad(s, (0, k - s.shape[-1]))
