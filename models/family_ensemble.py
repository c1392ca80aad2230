"""An ensemble over model families: GL-net seeds beside seeds of another architecture.

Why: on minilm-topics harmful detection GL-net and MLP+Dense tie (test AUROC 0.91-0.93) but their
errors differ; summing the two families' standardised scores lifted validation AUROC from 0.938
to 0.946 and the TPR at no false positive from 0.57 to 0.83 (``benchmarks/architecture_ensemble``).
A plain mean of logits would not do: a family whose logits spread ten times wider decides alone.
So each family's mean logit is centred and scaled by its mean and standard deviation on the
validation split (``fit_standardisation``, buffers in the checkpoint), and the families' scores
are summed with fixed weights. The output is a score, not a probability: ``loravet calibrate``
maps it to one, as for any predictor.

Only GL(r)-invariant families may be combined (``models.model_catalog.GL_INVARIANT_MODELS``), so
the ensemble is exactly GL(r)-invariant too.

    config = FamilyEnsembleConfig(members=(
        {"family": "gl_net", "model": "gl_net", "hparams": {...}}, ...,
        {"family": "mlp_dense", "model": "mlp_dense", "hparams": {...}}, ...))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch


@dataclass(frozen=True)
class FamilyEnsembleConfig:
    """``members``: one entry per member, ``{"family", "model", "hparams"}``; ``weights``: one
    per family, in order of first appearance (empty: 1 for every family)."""

    members: list[dict[str, Any]] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        from models.model_catalog import GL_INVARIANT_MODELS, MODEL_CATALOG

        # lists, as JSON gives them back: a reloaded config equals the saved one
        object.__setattr__(self, "members", [dict(m) for m in self.members])
        object.__setattr__(self, "weights", [float(w) for w in self.weights])
        if len(self.members) < 2:
            raise ValueError(f"Invalid members: {len(self.members)} (a family ensemble needs >= 2)")
        for m in self.members:
            if set(m) != {"family", "model", "hparams"}:
                raise ValueError(f"Invalid member {json.dumps(m)}: keys family, model, hparams")
            if m["model"] not in MODEL_CATALOG or m["model"] not in GL_INVARIANT_MODELS:
                raise ValueError(
                    f"Invalid member model {m['model']!r}: only GL(r)-invariant catalog models "
                    f"are combined ({', '.join(GL_INVARIANT_MODELS)})"
                )
        if self.weights and len(self.weights) != len(self.families):
            raise ValueError(
                f"Invalid weights: {len(self.weights)} given for {len(self.families)} families"
            )

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m["family"] for m in self.members))


class FamilyEnsemble(nn.Module):
    """``sum_f w_f (mean of family f's members' outputs - center_f) / scale_f``: (B, out)."""

    weights: torch.Tensor  # buffer (families, 1)
    center: torch.Tensor  # buffer (families, out)
    scale: torch.Tensor  # buffer (families, out)

    def __init__(
        self, spec: LoraSpec, out_features: int, config: FamilyEnsembleConfig | None = None
    ) -> None:
        from models.model_catalog import build_model  # the catalog lists this class

        super().__init__()
        if config is None:
            raise ValueError("a family ensemble needs its members (FamilyEnsembleConfig)")
        self.spec, self.out_features, self.config = spec, out_features, config
        self.members = nn.ModuleList(
            build_model(m["model"], spec, out_features, **m["hparams"]) for m in config.members
        )
        families = config.families
        # member indices of each family, in the families' order
        self._members_of = [
            [i for i, m in enumerate(config.members) if m["family"] == f] for f in families
        ]
        weights = config.weights or [1.0 for _ in families]
        # (F, 1); set by the config, so not stored twice
        self.register_buffer("weights", torch.tensor(weights).unsqueeze(1), persistent=False)
        self.register_buffer("center", torch.zeros(len(families), out_features))
        self.register_buffer("scale", torch.ones(len(families), out_features))

    def family_means(self, batch: LoraBatch) -> torch.Tensor:
        """(F, B, out): each family's mean raw output."""
        outs = [m(batch) for m in self.members]  # each (B, out)
        return torch.stack(
            [torch.stack([outs[i] for i in idx]).mean(0) for idx in self._members_of]
        )

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        z = (self.family_means(batch) - self.center[:, None]) / self.scale[:, None]  # (F, B, out)
        return (self.weights[:, None] * z).sum(dim=0)  # (B, out)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Fit every member's data-dependent buffers, then the standardisation, on ``batch``."""
        from models.model_catalog import fit_to_data

        for member in self.members:
            fit_to_data(member, batch)
        self.fit_standardisation(batch)

    @torch.no_grad()
    def fit_standardisation(self, batch: LoraBatch) -> None:
        """Centre and scale of each family's mean output on ``batch`` (the validation split)."""
        means = self.family_means(batch)  # (F, B, out)
        self.center.copy_(means.mean(dim=1))
        self.scale.copy_(means.std(dim=1).clamp_min(1e-6))


def family_config(members: list[tuple[str, Any]]) -> FamilyEnsembleConfig:
    """The config for (family, predictor config) pairs of trained members."""
    return FamilyEnsembleConfig(
        members=[
            {"family": family, "model": c.model_name, "hparams": dict(c.hparams)}
            for family, c in members
        ]
    )
