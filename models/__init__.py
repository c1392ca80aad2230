"""models: the LoL library (GL-net and the paper's baselines), checkpoints and the predictor contract.

    from models import LoraBatch, build_model, load_predictor
    batch = LoraBatch.from_adapters(adapters)                  # any ranks, one spec
    model = build_model("gl_net", batch.spec, out_features=1)  # (B, 1) logits
    model(batch)

Model names: gl_net, mlp, mlp_dense, mlp_svd, mlp_oalign, transformer, norm_stats
(``MODEL_CATALOG``). Symmetry helpers for tests and self-checks are in ``models.symmetry``.
"""

from models.checkpoint import CheckpointError, CheckpointSpecError, load_checkpoint, save_checkpoint
from models.dense_mlp import DenseMemoryError, dense_memory_bytes
from models.gl_net import GLNet, GLNetConfig
from models.lora_batch import LoraBatch, ShapeGroup, SpecMismatchError, spec_groups
from models.model_catalog import (
    GL_INVARIANT_MODELS,
    MODEL_CATALOG,
    build_config,
    build_model,
    fit_to_data,
    model_hparams,
    model_name,
)
from models.predictor import Predictor, PredictorConfig, load_predictor, save_predictor
from models.registry import PredictorRegistry

__all__ = [
    "GL_INVARIANT_MODELS", "MODEL_CATALOG", "CheckpointError", "CheckpointSpecError", "DenseMemoryError",
    "GLNet", "GLNetConfig", "LoraBatch", "Predictor", "PredictorConfig", "PredictorRegistry", "ShapeGroup",
    "SpecMismatchError", "build_config", "build_model", "dense_memory_bytes", "fit_to_data",
    "load_checkpoint", "load_predictor", "model_hparams", "model_name", "save_checkpoint",
    "save_predictor", "spec_groups",
]  # fmt: skip
