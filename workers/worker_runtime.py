"""What a worker process holds for its whole life: settings, Redis, the content store, the predictors.

Why a process-wide object: RQ calls job functions by dotted path with JSON arguments only, so the
job functions find the loaded predictors here instead of loading them per job. The resident worker
builds one :class:`WorkerRuntime` at start-up (predictors loaded once, on the GPU when there is
one) and parks the outcomes of a batched forward pass here for the job functions to pick up; under a
plain ``rq worker`` the first job builds the runtime from ``LORAVET_WORKER_*`` settings instead.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis import Redis

from core.content_store import open_content_store
from core.contracts import PredictorInfo, VetJobArgs
from lora_io import LoraFileError
from workers.settings import WorkerSettings
from workers.vetting_pipeline import RegistryLike, VetInput, vet_batch

log = logging.getLogger("loravet.worker")


class MissingUploadError(LoraFileError):
    """The uploaded bytes are not in the store: permanent, retrying cannot bring them back."""

    kind = "upload_missing"
    http_status = 422


class EmptyRegistry:
    """The registry of a worker with no predictor directory: every report says ``review``."""

    def for_spec(self, spec: Any) -> list[Any]:
        return []

    def all(self) -> list[Any]:
        return []


class DeviceUnavailableError(ValueError):
    """``cuda`` was asked for where torch sees no usable GPU (reported as one ``error:`` line)."""


def resolve_device(setting: str) -> str:
    """``auto`` picks CUDA when torch sees a GPU (one worker process per GPU), else the CPU.

    Raises:
        DeviceUnavailableError: ``cuda`` was asked for and torch cannot use one; the message says
            what was found.
    """
    if setting == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        found = (
            "this torch is a CPU-only build"
            if torch.version.cuda is None
            else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"
        )
        raise DeviceUnavailableError(
            f"device cuda: no usable CUDA device ({found}); accepted here: cpu or auto"
        )
    return "cpu"


def predictor_directory(settings: WorkerSettings) -> Path:
    """Where this worker's predictors are: ``predictor_dir``, or the published set named by
    ``predictor_set``, fetched from the content store into ``<storage_dir>/cache/predictor-sets/`` once.

    Raises:
        core.predictor_sets.PredictorSetError: the set is absent or its bytes were changed.
        core.content_store.StoreUnavailableError: the store cannot be read now.
    """
    if settings.predictor_set is None:
        return settings.predictor_dir
    from core.predictor_sets import fetch_predictor_set

    store = open_content_store(settings)
    path = fetch_predictor_set(
        store, settings.predictor_set, settings.storage_dir / "cache" / "predictor-sets"
    )
    log.info("predictor set %s from the content store, in %s", settings.predictor_set, path)
    return path


def load_registry(directory: Path, device_setting: str) -> tuple[RegistryLike, str]:
    """Load every predictor under ``directory`` once; returns (registry, device).

    A missing or empty directory is not an error: the service still runs the static checks and
    says plainly that no predictor knows the base model. torch is imported only when there is
    something to load.
    """
    if not directory.is_dir() or not any(directory.iterdir()):
        log.warning(
            "no predictors in %s: every report will say review (no predictor for this base model)",
            directory,
        )
        return EmptyRegistry(), "cpu"
    from models.registry import PredictorRegistry

    device = resolve_device(device_setting)
    registry = PredictorRegistry.from_directory(directory, device=device)
    for path, why in getattr(registry, "failures", {}).items():
        log.error("predictor %s was not loaded: %s", path, why)
    log.info("loaded %d predictor(s) from %s on %s", len(registry.all()), directory, device)
    return registry, device


def predictor_info(predictor: Any, device: str) -> PredictorInfo:
    """What ``GET /v1/predictors`` shows for one loaded predictor."""
    cfg = predictor.config
    meta = getattr(predictor, "meta", None) or {}
    # ``loravet train``, ``ensemble`` and ``via-task`` write the validation split's figures as
    # ``val_metrics``; a checkpoint written another way may carry them as ``metrics``
    metrics_src = (
        (meta.get("val_metrics") or meta.get("metrics") or {}) if isinstance(meta, dict) else {}
    )
    metrics = {
        str(k): float(v)
        for k, v in metrics_src.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    base = getattr(cfg, "base_model", None)
    return PredictorInfo(
        predictor_id=str(cfg.predictor_id),
        version=str(cfg.version),
        task=cfg.task,
        model_name=str(cfg.model_name),
        base_model=None if base is None else str(base),
        spec_fingerprint=cfg.spec.fingerprint,
        module_count=len(cfg.spec),
        threshold=cfg.threshold,
        label_names=list(cfg.label_names or []),
        metrics=metrics,
        device=device,
    )


class WorkerRuntime:
    """Long-lived state of one worker process."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        redis: Redis | None = None,
        registry: RegistryLike | None = None,
        device: str = "cpu",
    ) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else Redis.from_url(settings.redis_url)
        self.store = open_content_store(settings)
        self._registry = registry
        self.device = device
        self._lock = threading.Lock()
        self._outcomes: dict[str, Any] = {}
        self.name = settings.name or f"{socket.gethostname()}.{os.getpid()}"

    @property
    def registry(self) -> RegistryLike:
        with self._lock:
            if self._registry is None:
                self._registry, self.device = load_registry(
                    predictor_directory(self.settings), self.settings.device
                )
            return self._registry

    def predictor_infos(self) -> list[PredictorInfo]:
        return [predictor_info(p, self.device) for p in self.registry.all()]

    # -- batched outcomes: the resident worker computes, the job function picks up
    def park_outcomes(self, outcomes: dict[str, Any]) -> None:
        self._outcomes.update(outcomes)

    def take_outcome(self, job_id: str) -> Any | None:
        return self._outcomes.pop(job_id, None)

    def vet(self, args: Sequence[VetJobArgs]) -> list[Any]:
        """Read each adapter from the store and vet them all in one batch."""
        items: list[VetInput | Exception] = []
        for a in args:
            try:
                adapter = self.store.get_bytes("adapters", a.sha256)
                config = (
                    self.store.get_bytes("configs", a.config_sha256) if a.config_sha256 else None
                )
            except FileNotFoundError:
                items.append(
                    MissingUploadError(
                        f"the uploaded bytes of {a.sha256} are not in the content store; the API and the "
                        "workers must share one store (the same LORAVET_API_STORAGE_DIR / LORAVET_WORKER_STORAGE_DIR, "
                        "or with STORE_BACKEND=s3 the same S3 endpoint, bucket and prefix)"
                    )
                )
                continue
            items.append(
                VetInput(
                    adapter=adapter,
                    config=config,
                    report_id=a.report_id,
                    config_sha256=a.config_sha256,
                    submitted_at=a.submitted_at,
                )
            )
        good = [i for i in items if isinstance(i, VetInput)]
        reports = iter(
            vet_batch(good, self.registry, predictor_set=self.settings.predictor_set)
            if good
            else []
        )
        return [next(reports) if isinstance(i, VetInput) else i for i in items]


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def set_runtime(runtime: WorkerRuntime | None) -> None:
    """Install the process-wide runtime (the resident worker does this once at start-up)."""
    global _runtime
    _runtime = runtime


def get_runtime() -> WorkerRuntime:
    """The process-wide runtime; built from ``LORAVET_WORKER_*`` settings on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime(WorkerSettings())
        return _runtime
