"""The predictor contract between training and workers: a model, what its outputs mean, one spec.

Training writes a predictor with ``save_predictor``; a worker reads it once with ``load_predictor``
(or a ``PredictorRegistry``) and calls ``predict`` on validated adapters:

    predictor = load_predictor("checkpoints/minilm-harmful-gl_net")
    probs = predictor.predict([load_adapter(path, config=cfg)])   # (1, 1), P(harmful)

``predict`` answers in user units: probabilities for ``harmful`` and ``membership``, de-normalised
values (``out * target_std + target_mean``) for ``quality``. A predictor only ever runs on adapters
of the spec it was trained for; anything else raises ``CheckpointSpecError``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from lora_io.lora_adapter import LoraAdapter
from lora_io.lora_spec import LoraSpec
from models.calibration import Calibration
from models.checkpoint import CheckpointError, CheckpointSpecError, load_checkpoint, save_checkpoint
from models.lora_batch import LoraBatch
from models.model_catalog import MODEL_CATALOG, build_model, model_hparams, model_name
from models.token_scan import TokenScan

Task = Literal["quality", "harmful", "membership"]
TASKS: tuple[Task, ...] = ("quality", "harmful", "membership")
PREDICT_BATCH_SIZE = 64
"""Adapters per forward pass in ``Predictor.predict`` (bounds memory on long lists)."""


@dataclass(frozen=True)
class PredictorConfig:
    """Everything needed to rebuild a predictor's model and to read its outputs (``config.json``).

    ``target_mean``/``target_std``: per-output normalisation of regression targets (quality); empty
    lists mean none. ``threshold``: decision threshold on the probability (harmful), else None.
    ``label_names``: one name per output (e.g. topics for membership). ``calibration``: the
    read-out fitted on validation LoRAs (:mod:`models.calibration`); None for an uncalibrated one.
    """

    predictor_id: str
    version: str
    task: Task
    model_name: str
    hparams: dict[str, Any]
    spec: LoraSpec
    out_features: int
    target_mean: list[float]
    target_std: list[float]
    threshold: float | None
    label_names: list[str]
    base_model: str
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if not self.predictor_id:
            raise ValueError("Invalid predictor_id: '' (must be non-empty)")
        if self.task not in TASKS:
            raise ValueError(f"Invalid task: {self.task!r} (one of {', '.join(TASKS)})")
        if self.model_name not in MODEL_CATALOG:
            raise ValueError(
                f"Invalid model_name: {self.model_name!r} (known: {', '.join(MODEL_CATALOG)})"
            )
        if self.out_features < 1:
            raise ValueError(f"Invalid out_features: {self.out_features!r} (must be >= 1)")
        for name in ("target_mean", "target_std"):
            if len(getattr(self, name)) not in (0, self.out_features):
                raise ValueError(
                    f"Invalid {name}: {getattr(self, name)!r} (empty or {self.out_features} values)"
                )
        if len(self.target_mean) != len(self.target_std):
            raise ValueError(
                "Invalid target_std: target_mean and target_std must have the same length"
            )
        if any(not (math.isfinite(s) and s > 0) for s in self.target_std):
            raise ValueError(f"Invalid target_std: {self.target_std!r} (must be finite and > 0)")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"Invalid threshold: {self.threshold!r}")
        if len(self.label_names) != self.out_features:
            raise ValueError(
                f"Invalid label_names: {self.label_names!r} ({self.out_features} names needed)"
            )

    def to_json(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["spec"] = self.spec.to_json()
        doc["spec_fingerprint"] = self.spec.fingerprint
        if self.calibration is None:
            doc.pop("calibration")
        else:
            doc["calibration"] = self.calibration.to_json()
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PredictorConfig:
        """Parse ``config.json``; the stored fingerprint must match the stored spec."""
        optional = {"calibration"}
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in doc and n not in optional]
        if missing:
            raise ValueError(f"predictor config lacks {', '.join(missing)}")
        values = {n: doc[n] for n in names if n in doc}
        if doc.get("calibration") is not None:
            values["calibration"] = Calibration.from_json(doc["calibration"])
        values["spec"] = LoraSpec.from_json(doc["spec"])
        values["target_mean"] = [float(x) for x in doc["target_mean"]]
        values["target_std"] = [float(x) for x in doc["target_std"]]
        values["label_names"] = [str(x) for x in doc["label_names"]]
        config = cls(**values)
        stored = doc.get("spec_fingerprint")
        if stored is not None and stored != config.spec.fingerprint:
            raise ValueError(
                f"config spec_fingerprint {stored} does not match its spec ({config.spec.fingerprint})"
            )
        return config


class Predictor:
    """A loaded model with its config and provenance; ``predict`` maps adapters to user units."""

    def __init__(
        self,
        config: PredictorConfig,
        model: nn.Module,
        meta: dict[str, Any] | None = None,
        directory: Path | None = None,
    ) -> None:
        self.config, self.model, self.meta, self.directory = (
            config,
            model.eval(),
            dict(meta or {}),
            directory,
        )

    def __repr__(self) -> str:
        c = self.config
        return f"Predictor({c.predictor_id!r} v{c.version}, {c.task}, {c.model_name}, spec {c.spec.fingerprint})"

    @property
    def spec(self) -> LoraSpec:
        return self.config.spec

    def check_spec(self, spec: LoraSpec, what: str = "adapter") -> None:
        """Raise ``CheckpointSpecError`` unless ``spec`` is the one this predictor was trained for."""
        if spec != self.config.spec:
            raise CheckpointSpecError(
                f"{what} has spec fingerprint {spec.fingerprint} ({len(spec)} modules) but predictor "
                f"{self.config.predictor_id!r} was trained for spec {self.config.spec.fingerprint} "
                f"({len(self.config.spec)} modules, base model {self.config.base_model!r})"
            )

    def to_user_units(self, raw: torch.Tensor) -> np.ndarray:
        """(B, out) raw model outputs -> probabilities (classification) or de-normalised values."""
        raw = raw.detach().to("cpu", torch.float64)
        if self.config.task == "harmful" and self.config.calibration is not None:
            return self.config.calibration.probability(raw.numpy())
        if self.config.task in ("harmful", "membership"):
            return torch.sigmoid(raw).numpy()
        if self.config.target_mean:
            raw = raw * torch.tensor(self.config.target_std, dtype=torch.float64) + torch.tensor(
                self.config.target_mean, dtype=torch.float64
            )
        return raw.numpy()

    def token_scan(self) -> TokenScan | None:
        """The token scan in this predictor's model (the model itself or an ensemble member)."""
        return next((m for m in self.model.modules() if isinstance(m, TokenScan)), None)

    @torch.inference_mode()
    def evidence(
        self, adapters: Sequence[LoraAdapter] | LoraBatch, k: int = 5
    ) -> list[list[dict[str, Any]]] | None:
        """Per adapter, the ``k`` inputs its deltas answer most unusually against clean finetunes
        (``{"module", "probe", "z"}``, highest first), from the model's token scan; an empty list
        where its scan score is within what clean finetunes reach; None when the model has no
        scan. Why: a person reviewing a flagged text adapter can try those tokens."""
        scan = self.token_scan()
        if scan is None:
            return None
        self.model.eval()
        param = placement(self.model)
        if isinstance(adapters, LoraBatch):
            self.check_spec(adapters.spec, "batch")
            batch = adapters.to(device=param.device, dtype=param.dtype)
        else:
            batch = LoraBatch.from_adapters(
                list(adapters), self.config.spec, dtype=param.dtype, device=param.device
            )
        return [
            [{"module": m, "probe": scan.probe_label(i), "z": z} for m, i, z in row]
            for row in scan.top_probes(batch, k)
        ]

    @torch.inference_mode()
    def predict(
        self, adapters: Sequence[LoraAdapter] | LoraBatch, *, batch_size: int = PREDICT_BATCH_SIZE
    ) -> np.ndarray:
        """(B, out) float64 predictions in user units for validated adapters or a ready batch.

        Raises:
            CheckpointSpecError: an adapter (or the batch) is of another spec than the predictor's.
        """
        self.model.eval()
        param = placement(self.model)
        if isinstance(adapters, LoraBatch):
            self.check_spec(adapters.spec, "batch")
            batch = adapters.to(device=param.device, dtype=param.dtype)
            chunks = [
                batch.select(slice(i, i + batch_size)) for i in range(0, len(batch), batch_size)
            ]
            if not chunks:
                return np.zeros((0, self.config.out_features))
            return self.to_user_units(torch.cat([self.model(chunk) for chunk in chunks]))
        adapters = list(adapters)
        for k, adapter in enumerate(adapters):
            self.check_spec(adapter.spec, f"adapter {k}")
        if not adapters:
            return np.zeros((0, self.config.out_features))
        # One pass per widest rank: a rank-4 adapter batched with a rank-16 one would be
        # zero-padded to 16 columns, quadrupling the first layer's work for nothing.
        order = sorted(range(len(adapters)), key=lambda k: max(adapters[k].ranks))
        raw: list[torch.Tensor] = []
        rows: list[int] = []
        for _, group in itertools.groupby(order, key=lambda k: max(adapters[k].ranks)):
            same = list(group)
            for i in range(0, len(same), batch_size):
                chunk = same[i : i + batch_size]
                batch = LoraBatch.from_adapters(
                    [adapters[k] for k in chunk],
                    self.config.spec,
                    dtype=param.dtype,
                    device=param.device,
                )
                raw.append(self.model(batch).to("cpu"))
                rows += chunk
        out = torch.empty(len(adapters), raw[0].shape[1], dtype=raw[0].dtype)
        out[torch.tensor(rows)] = torch.cat(raw)
        return self.to_user_units(out)


def placement(model: nn.Module) -> torch.Tensor:
    """A tensor of ``model`` telling its device and dtype: its first parameter, or its first
    buffer for a model fitted without parameters (``token_scan``)."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        return t
    raise ValueError(f"{type(model).__name__} holds no tensor to tell its device and dtype")


HALF_STORAGE = (torch.float16, torch.bfloat16)
"""Storage-only dtypes: parameters saved in one of them are computed in float32 after loading."""


def save_predictor(
    predictor: Predictor | nn.Module,
    directory: str | Path,
    config: PredictorConfig | None = None,
    meta: dict[str, Any] | None = None,
    *,
    parameters_dtype: torch.dtype | None = None,
) -> Path:
    """Save a predictor (or a model with its ``config``) as a checkpoint directory.

    The model's fully resolved hyperparameters replace ``config.hparams`` in ``config.json``; the
    given ones must agree with the model. ``parameters_dtype`` (float16 or bfloat16) stores the
    learned parameters at half the bytes; buffers (fitted statistics, tree thresholds, probe
    baselines) keep their dtype, since a rounded threshold would move decisions, not just outputs.
    Why: shipped checkpoints live inside the repository's data budget, and a trained weight's
    last mantissa bits carry no information its training noise did not already blur. Returns the
    directory.
    """
    if isinstance(predictor, Predictor):
        model = predictor.model
        config = config or predictor.config
        meta = predictor.meta if meta is None else meta
    else:
        model = predictor
    if config is None:
        raise ValueError("save_predictor needs a PredictorConfig when given a bare model")
    name = model_name(model)
    if name != config.model_name:
        raise ValueError(f"model is {name!r} but config.model_name is {config.model_name!r}")
    model_spec = cast(LoraSpec, model.spec)  # every catalog model keeps its spec
    if model_spec != config.spec:
        raise CheckpointSpecError(
            f"model was built for spec {model_spec.fingerprint} but config has spec {config.spec.fingerprint}"
        )
    if model.out_features != config.out_features:
        raise ValueError(
            f"model has {model.out_features} outputs but config.out_features is {config.out_features}"
        )
    hparams = model_hparams(model)
    disagree = {k: (v, hparams.get(k)) for k, v in config.hparams.items() if hparams.get(k) != v}
    if disagree:
        raise ValueError(f"config.hparams disagree with the model (config, model): {disagree}")
    config = dataclasses.replace(config, hparams=hparams)
    state = model.state_dict()
    if parameters_dtype is not None:
        if parameters_dtype not in HALF_STORAGE:
            raise ValueError(
                f"parameters_dtype must be float16 or bfloat16, got {parameters_dtype}"
            )
        learned = {name for name, _ in model.named_parameters()}
        state = {
            k: v.to(parameters_dtype) if k in learned and v.is_floating_point() else v
            for k, v in state.items()
        }
    return save_checkpoint(directory, state, config.to_json(), dict(meta or {}))


def load_predictor(directory: str | Path, *, device: str | torch.device = "cpu") -> Predictor:
    """Load a checkpoint directory written by ``save_predictor``, model in eval mode on ``device``.

    Parameters stored in half precision (``save_predictor(parameters_dtype=...)``) are computed in
    float32; any other checkpoint is computed in the dtype it was saved in, bit for bit.

    Raises:
        CheckpointError: missing or unreadable files, invalid config, or weights that do not fit
            the model the config describes; the message names the directory.
    """
    directory = Path(directory)
    tensors, doc, meta = load_checkpoint(directory)
    try:
        config = PredictorConfig.from_json(doc)
        model = build_model(config.model_name, config.spec, config.out_features, **config.hparams)
        float_dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
        float_dtypes -= set(HALF_STORAGE)  # half-stored parameters are computed in float32
        if len(float_dtypes) == 1:
            model = model.to(float_dtypes.pop())  # bit-identical: no cast on load
        model.load_state_dict(tensors, strict=True)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {str(directory)!r} is invalid: {exc}") from exc
    return Predictor(config, model.to(device), meta, directory)
