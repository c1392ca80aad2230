"""The model names a checkpoint or CLI may use, each mapped to (config class, model class).

Every model is built the same way, ``Model(spec, out_features, Config(**hparams))``, takes a
``LoraBatch`` and returns (B, out_features) raw outputs (logits or normalised regression values).
Models with data-dependent state (input scales, standardisation, an alignment template) expose
``fit_to_data(batch)``; that state lives in buffers, so checkpoints carry it.

    model = build_model("gl_net", spec, out_features=1, hidden=16, n_layers=2)
    fit_to_data(model, train_batch)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from lora_io.lora_spec import LoraSpec
from models.dense_mlp import DenseMLP, DenseMLPConfig
from models.factor_mlp import FactorMLP, FactorMLPConfig
from models.family_ensemble import FamilyEnsemble, FamilyEnsembleConfig
from models.gl_net import GLNet, GLNetConfig
from models.gl_net_ensemble import GLNetEnsemble, GLNetEnsembleConfig
from models.lora_batch import LoraBatch
from models.module_transformer import ModuleTransformer, ModuleTransformerConfig
from models.norm_stats import NormStats, NormStatsConfig
from models.oalign_mlp import OAlignMLP, OAlignMLPConfig
from models.quality_via_task import QualityViaTask, QualityViaTaskConfig
from models.svd_mlp import SVDMLP, SVDMLPConfig
from models.token_scan import TokenScan, TokenScanConfig
from models.w2t import W2T, W2TConfig

MODEL_CATALOG: dict[str, tuple[type[Any], type[nn.Module]]] = {
    "gl_net": (GLNetConfig, GLNet),
    "mlp": (FactorMLPConfig, FactorMLP),
    "mlp_dense": (DenseMLPConfig, DenseMLP),
    "mlp_svd": (SVDMLPConfig, SVDMLP),
    "mlp_oalign": (OAlignMLPConfig, OAlignMLP),
    "transformer": (ModuleTransformerConfig, ModuleTransformer),
    "norm_stats": (NormStatsConfig, NormStats),
    "gl_net_ensemble": (GLNetEnsembleConfig, GLNetEnsemble),
    "w2t": (W2TConfig, W2T),
    "quality_via_task": (QualityViaTaskConfig, QualityViaTask),
    "family_ensemble": (FamilyEnsembleConfig, FamilyEnsemble),
    "token_scan": (TokenScanConfig, TokenScan),
}
"""Model name -> (frozen config dataclass, nn.Module class)."""

GL_INVARIANT_MODELS = (
    "gl_net", "mlp_dense", "mlp_svd", "norm_stats", "gl_net_ensemble", "w2t", "quality_via_task",
    "family_ensemble", "token_scan",
)  # fmt: skip
"""Models whose output is exactly invariant to (U_i, V_i) -> (U_i R_i, V_i R_i^{-T}) per module."""


def build_config(name: str, **hparams: Any) -> Any:
    """The config of model ``name`` with ``hparams`` over its defaults (clear error on unknown keys)."""
    if name not in MODEL_CATALOG:
        raise ValueError(f"Invalid model name: {name!r} (known: {', '.join(MODEL_CATALOG)})")
    config_class = MODEL_CATALOG[name][0]
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for {name!r}; known: {sorted(known)}"
        )
    return config_class(**hparams)


def build_model(name: str, spec: LoraSpec, out_features: int, **hparams: Any) -> nn.Module:
    """Build model ``name`` for adapters of ``spec`` with ``out_features`` outputs."""
    if out_features < 1:
        raise ValueError(f"Invalid out_features: {out_features!r} (must be >= 1)")
    config = build_config(name, **hparams)
    return MODEL_CATALOG[name][1](spec, out_features, config)


def model_name(model: nn.Module) -> str:
    """The catalog name of a built model."""
    for name, (_, model_class) in MODEL_CATALOG.items():
        if type(model) is model_class:
            return name
    raise ValueError(f"{type(model).__name__} is not a catalog model ({', '.join(MODEL_CATALOG)})")


def model_hparams(model: nn.Module) -> dict[str, Any]:
    """All resolved hyperparameters of a built model (what ``build_model`` needs to rebuild it)."""
    config: Any = model.config  # every catalog model keeps its frozen config dataclass
    return dataclasses.asdict(config)


def fit_to_data(model: nn.Module, batch: LoraBatch) -> None:
    """Fit a model's data-dependent buffers on training adapters; a no-op for models without any."""
    fit = getattr(model, "fit_to_data", None)
    if fit is not None:
        fit(batch)
