"""``MLPBlock``: the plain MLP every baseline ends in, as the paper's LLM code builds it."""

from __future__ import annotations

from torch import nn


class MLPBlock(nn.Sequential):
    """[Linear -> LayerNorm -> Dropout -> ReLU] x (n_layers - 1), then Linear (no symmetry: a head)."""

    def __init__(
        self, in_features: int, hidden: int, out_features: int, n_layers: int, dropout: float
    ) -> None:
        if n_layers < 1:
            raise ValueError(f"Invalid n_layers: {n_layers!r} (must be >= 1)")
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(n_layers - 1):
            layers += [
                nn.Linear(width, hidden),
                nn.LayerNorm(hidden),
                nn.Dropout(dropout),
                nn.ReLU(),
            ]
            width = hidden
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
