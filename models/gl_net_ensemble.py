"""An ensemble of GL-nets trained with different seeds: the mean of their raw outputs (logits).

Why: a GL-net trained on a few hundred LoRAs lands in a different place for every seed (the minilm
harmful AUROC spreads +-0.008 over seeds, its TPR at low FPR +-0.07), and a hub needs the low-FPR
end to be steady. Averaging the logits of members that differ only in their seed is the cheapest
variance reduction there is; each member is GL(r)-invariant, so the mean is too.

Members are trained as ordinary GL-net predictors (``loravet train --seed k``) and combined by
``loravet ensemble``; a checkpoint holds all of them (``members.<k>.<GL-net key>``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, cast

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.config_checks import check_config
from models.gl_net import GLNet, GLNetConfig
from models.lora_batch import LoraBatch


@dataclass(frozen=True)
class GLNetEnsembleConfig:
    """``members`` GL-nets sharing one set of GL-net hyperparameters (see ``GLNetConfig``)."""

    members: int = 3
    hidden: int = 16
    n_layers: int = 2
    head_dim: int = 64
    dropout: float = 0.1
    pool: Literal["flatten", "mean", "norms"] = "flatten"
    input_norm: Literal["none", "fitted"] = "fitted"

    def __post_init__(self) -> None:
        check_config(self, positive=("members",))
        self.member_config()  # validates the GL-net part

    def member_config(self) -> GLNetConfig:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.pop("members")
        return GLNetConfig(**fields)


class GLNetEnsemble(nn.Module):
    """Mean of the members' raw outputs: (B, out_features)."""

    def __init__(
        self, spec: LoraSpec, out_features: int, config: GLNetEnsembleConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or GLNetEnsembleConfig()
        self.members = nn.ModuleList(
            GLNet(spec, out_features, config.member_config()) for _ in range(config.members)
        )

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        return torch.stack([m(batch) for m in self.members]).mean(dim=0)  # (B, out)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        for member in self.members:
            cast(GLNet, member).fit_to_data(batch)
