"""Settings of a worker process, from ``LORAVET_WORKER_*`` environment variables (or a ``.env``).

One settings class per process type: a worker never reads the API's settings, and tests build a
``WorkerSettings(...)`` directly instead of touching ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from core.contracts import is_sha256_hex
from core.durable_worker import DurableWorkerSettings
from loravet import SHIPPED_PREDICTORS

DEFAULT_WEBHOOK_RETRY_SCHEDULE = (5, 30, 120, 600, 1800, 7200, 18000, 36000)
"""Seconds before delivery attempts 2, 3, ... (before jitter): 9 attempts over about 17 hours."""


def parse_int_list(value: object) -> object:
    """Accept ``"5,30,120"`` from the environment as well as a list."""
    if isinstance(value, str):
        return [int(x) for x in value.replace(" ", "").split(",") if x]
    return value


class WorkerSettings(DurableWorkerSettings):
    """Everything a resident worker needs; defaults suit ``loravet serve`` on one machine. Redis,
    the content store (``LORAVET_WORKER_STORE_BACKEND``, ``..._STORAGE_DIR``, ``..._S3_*``, shared
    with the API's settings), name, heartbeats and logging are
    :class:`core.durable_worker.DurableWorkerSettings`, shared with the zoo worker."""

    predictor_dir: Path = SHIPPED_PREDICTORS
    """The predictors to load, from a directory this machine can read (mounted or shipped)."""
    predictor_set: str | None = None
    """Instead of ``predictor_dir``: the sha256 of a predictor set published to the content store
    (``loravet predictors publish``), for workers that share no filesystem with anyone. Fetched
    once into ``<storage_dir>/cache/predictor-sets/`` and checked file by file."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses a GPU when ``torch.cuda.is_available()``; one worker process per GPU."""

    batch_size: int = Field(default=16, ge=1, le=256)
    """Most vetting jobs taken into one forward pass."""

    queues: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["loravet-vetting", "loravet-webhooks"]
    )
    """Queues served, highest priority first."""

    with_scheduler: bool = True
    """Run RQ's scheduler (needed for retries with a delay)."""

    store_outage_wait_s: int = Field(default=240, ge=0)
    """How long a vetting job waits for an unavailable content store (unreachable, refusing) before
    it fails and RQ retries it. Waiting keeps the job's retries for real faults; it must stay below
    the API's ``job_timeout_s`` (300 s by default)."""

    allow_private_webhooks: bool = False
    """Allow callbacks to private, loopback and link-local addresses (on-prem receivers). Metadata
    addresses stay refused."""

    webhook_timeout_s: float = Field(default=12.0, gt=0, le=30)
    webhook_retry_schedule: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_RETRY_SCHEDULE)
    )
    webhook_jitter: float = Field(default=0.2, ge=0, le=1)
    """Each retry delay is multiplied by a random factor in [1 - jitter, 1 + jitter]."""

    @field_validator("predictor_set", mode="before")
    @classmethod
    def _set_digest(cls, value: object) -> object:
        if value in ("", None):
            return None
        if not (isinstance(value, str) and is_sha256_hex(value)):
            raise ValueError(
                "predictor_set is the sha256 `loravet predictors publish` printed "
                "(64 lowercase hex characters)"
            )
        return value

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q for q in value.replace(" ", "").split(",") if q]
        return value

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        return parse_int_list(value)
