"""``FeatureStandardizer``: per-feature (x - mean) / std with statistics fitted on training data.

Stored as buffers, so a checkpoint carries them and serving applies exactly the training transform.
Unfitted it is the identity. Applied after invariant features, so it never breaks an invariance.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureStandardizer(nn.Module):
    """Standardise (B, F) features with fitted mean and std buffers (identity until ``fit``)."""

    mean: torch.Tensor  # (F,) buffer
    std: torch.Tensor  # (F,) buffer

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))  # (F,)
        self.register_buffer("std", torch.ones(n_features))  # (F,)

    @torch.no_grad()
    def fit(self, features: torch.Tensor) -> None:
        """Fit on (B, F) training features; constant features keep std 1 (no division by ~0)."""
        mean = features.mean(dim=0)  # (F,)
        std = (
            features.std(dim=0, unbiased=False) if features.shape[0] > 1 else torch.zeros_like(mean)
        )
        scale = mean.abs().clamp_min(1.0)
        std = torch.where(std > 1e-6 * scale, std, torch.ones_like(std))
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean.to(features.dtype)) / self.std.to(features.dtype)  # (B, F)
