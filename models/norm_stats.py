"""``norm_stats``: the weight-space backdoor detector of arXiv 2602.15195, as a linear model.

Per module, five statistics of the singular values of ``U_i V_i^T`` (QR trick, never the delta):
log top singular value, log Frobenius norm, energy concentration ``s_1^2 / Σ s^2``, spectral entropy
``-Σ p log p`` with ``p = s^2 / Σ s^2``, and the (Pearson) kurtosis of the adapter's r_i singular
values. Logs keep the scale-like statistics, which span orders of magnitude across adapters, well
conditioned. Then optional standardisation (buffers fitted by ``fit_to_data``) and one Linear layer:
logistic regression when trained with BCE, linear regression with MSE.

GL-invariant: every statistic is a function of the spectrum of ``U_i V_i^T``. Kurtosis counts the
declared rank r_i of each adapter's module, so zero padding is exact; a zero delta gives
concentration, entropy and kurtosis 0, and r_i = 1 gives kurtosis 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.feature_standardizer import FeatureStandardizer
from models.lora_batch import LoraBatch, check_spec, group_to_spec_order
from models.lora_spectrum import lora_singular_values

STATISTICS = (
    "log_top_singular_value",
    "log_frobenius_norm",
    "energy_concentration",
    "spectral_entropy",
    "kurtosis",
)
"""Names of the per-module features, in the order they appear (module-major) in ``features``."""


def spectral_statistics(U: torch.Tensor, V: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """The five statistics of ``U V^T``: U (..., n, r), V (..., m, r), ranks (...) -> (..., 5)."""
    s = lora_singular_values(U, V)  # (..., k), descending
    tiny = torch.finfo(s.dtype).tiny
    k = s.shape[-1]
    count = ranks.clamp(min=1, max=k).to(s.dtype)  # (...,)
    mask = (torch.arange(k, device=s.device) < count.unsqueeze(-1)).to(s.dtype)  # (..., k)
    top = s[..., 0]  # (...,)
    unit = s / top.clamp_min(tiny).unsqueeze(-1)  # (..., k) in [0, 1]: scale-free statistics
    energy = unit.square() * mask  # (..., k)
    p = energy / energy.sum(dim=-1, keepdim=True).clamp_min(tiny)  # (..., k)
    log_top = torch.log(top.clamp_min(tiny))
    log_fro = log_top + 0.5 * torch.log(energy.sum(dim=-1).clamp_min(tiny))
    concentration = p[..., 0]
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    mean = (unit * mask).sum(dim=-1) / count  # (...,)
    dev = (unit - mean.unsqueeze(-1)) * mask  # (..., k)
    m2 = dev.square().sum(dim=-1) / count
    m4 = dev.pow(4).sum(dim=-1) / count
    kurtosis = torch.where(m2 > 1e-12, m4 / m2.clamp_min(1e-12).square(), torch.zeros_like(m2))
    return torch.stack([log_top, log_fro, concentration, entropy, kurtosis], dim=-1)  # (..., 5)


@dataclass(frozen=True)
class NormStatsConfig:
    """Spectral-statistics linear model: only whether features are standardised."""

    standardize: bool = True


class NormStats(nn.Module):
    """Linear (logistic) model on per-module spectral statistics. Invariant to GL(r) per module."""

    to_spec_order: torch.Tensor  # buffer

    def __init__(
        self, spec: LoraSpec, out_features: int, config: NormStatsConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config or NormStatsConfig()
        n_features = len(spec) * len(STATISTICS)
        self.standardizer = FeatureStandardizer(n_features)
        self.linear = nn.Linear(n_features, out_features)
        self.register_buffer("to_spec_order", group_to_spec_order(spec), persistent=False)

    def features(self, batch: LoraBatch) -> torch.Tensor:
        """(B, L * 5) statistics, module by module in spec order (``STATISTICS`` within a module)."""
        check_spec(self.spec, batch)
        stats = [spectral_statistics(g.U, g.V, g.ranks) for g in batch.groups]  # each (B, L_g, 5)
        return torch.cat(stats, dim=1).index_select(1, self.to_spec_order).flatten(start_dim=1)

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        x = self.features(batch)  # (B, 5L)
        if self.config.standardize:
            x = self.standardizer(x)
        return self.linear(x)  # (B, out)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Fit the feature standardisation on training adapters."""
        if self.config.standardize:
            self.standardizer.fit(self.features(batch))
