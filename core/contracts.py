"""The contract between the API and the workers: job arguments, the report, webhook events, and the
names of everything the two processes share in Redis.

Pure pydantic and standard library (no torch, no rq), because the API imports it. Only ids and store keys travel through the queue (JSON
serializer), never bytes and never pickles; the adapter itself lives in the content store.

The callback-address policy and webhook signing, also shared, are in ``core.webhook_security``.
"""

from __future__ import annotations

import functools
import hashlib
import re
from datetime import datetime
from importlib import metadata
from typing import Annotated, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
"""Version of the :class:`Report` JSON; bumped on any incompatible change."""

# ----------------------------------------------------------------------------------------- queue
VET_QUEUE = "loravet-vetting"
"""Queue of vetting jobs (one adapter each); resident workers batch several into one forward pass."""

WEBHOOK_QUEUE = "loravet-webhooks"
"""Queue of webhook deliveries (one event to one subscription each)."""

VET_FUNCTION = "workers.jobs.vet_adapter"
"""Dotted path the API enqueues by string, so the API never imports the job code."""

VET_FAILURE_CALLBACK = "workers.jobs.on_vet_failure"
"""RQ ``on_failure`` callback: records the reason and sends ``report.failed`` on a final failure."""

WEBHOOK_FUNCTION = "workers.jobs.deliver_webhook"

ZOO_QUEUE = "loravet-zoo"
"""Queue of zoo builds spread over machines: one finetune (one LoRA index of a zoo) per job."""

ZOO_FUNCTION = "zoo.distributed_build.build_lora"
"""Dotted path of the zoo job, enqueued by string (``loravet zoo build --queue``)."""


@functools.cache
def loravet_version() -> str:
    """The installed loravet version, recorded in every report (read once: reading package
    metadata parses files, about 2 ms, which a batch of reports would pay per report)."""
    try:
        return metadata.version("loravet")
    except metadata.PackageNotFoundError:
        return "0+unknown"


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256_hex(value: str) -> bool:
    """True for 64 lowercase hex digits: the only shape a content key may have."""
    return bool(_HEX64.match(value))


def report_id_for(sha256: str, config_sha256: str | None) -> str:
    """The id a report is stored under: the adapter's sha256, or, with a config, a hash of both.

    Why not the adapter hash alone: ``adapter_config.json`` sets ``lora_alpha`` and so the scale of
    every delta; the same weights with another config are another adapter and get another report.
    """
    if config_sha256 is None:
        return sha256
    return hashlib.sha256(f"{sha256}+{config_sha256}".encode()).hexdigest()


# ------------------------------------------------------------------------------------- job args
class VetJobArgs(BaseModel):
    """Arguments of one vetting job: store keys and ids only."""

    model_config = ConfigDict(extra="forbid")

    report_id: str
    sha256: str
    config_sha256: str | None = None
    submitted_at: datetime
    report_url: str | None = None


class ZooJobArgs(BaseModel):
    """Arguments of one zoo job: everything LoRA ``index`` of the build derives from."""

    model_config = ConfigDict(extra="forbid")

    build_id: str
    recipe: str
    steps_scale: float
    base: str | None = None
    index: int


class WebhookDeliveryArgs(BaseModel):
    """Arguments of one delivery: which stored event goes to which subscription."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    subscription_id: str


# --------------------------------------------------------------------------------------- report
Verdict = Literal["accept", "review", "reject"]
Task = Literal["quality", "harmful", "membership"]
CheckStatus = Literal["pass", "warn", "fail"]


class ModuleEntry(BaseModel):
    """One adapted module: the shape of its weight delta, its rank and the scale applied to B A."""

    name: str
    out_features: int
    in_features: int
    rank: int
    scale: float


class CheckEntry(BaseModel):
    name: str
    status: CheckStatus
    detail: str


class EvidenceEntry(BaseModel):
    """One input the adapter answers far more than clean finetunes of its base do (token scan)."""

    module: str
    """The adapted module whose delta answers it (for example layer 0's attention value)."""
    probe: str
    """The input: a token of the base model's vocabulary, or ``input <k>`` for a coordinate."""
    z: float
    """How many clean-finetune standard deviations above their mean its response is."""


class PredictionEntry(BaseModel):
    """One predictor's output in user units (probability for harmful/membership, value for quality)."""

    task: Task
    predictor_id: str
    predictor_version: str
    value: float
    threshold: float | None = None
    label: str | None = None
    values: dict[str, float] | None = None
    review_threshold: float | None = None
    """harmful: from this probability up to ``threshold`` the verdict is ``review`` (unsure band)."""
    interval: tuple[float, float] | None = None
    """quality: the predictor's interval for the true value, at ``interval_coverage``."""
    interval_coverage: float | None = None
    decides: bool = True
    """False when the predictor is shown for information only (a quality predictor that explains
    too little of measured quality to set a verdict)."""
    note: str | None = None
    """The operating point or caveat in words, from the predictor's calibration."""
    evidence: list[EvidenceEntry] | None = None
    """harmful, from a predictor with a token scan, when the adapter is flagged or in the review
    band: the inputs it answers most unusually, highest first (for a text backdoor, usually its
    trigger's tokens). None otherwise."""


class BaseModelEntry(BaseModel):
    """What the adapter was trained on, from module names and shapes (never from metadata)."""

    family: str
    title: str
    hint: str | None = None
    spec_fingerprint: str
    module_count: int


class VerdictReason(BaseModel):
    """Why the verdict is what it is. ``code`` is stable; ``message`` is for people."""

    code: Literal[
        "check_failed",
        "harmful",
        "harmful_uncertain",
        "no_predictor",
        "check_warning",
        "low_quality",
    ]
    message: str


class Timings(BaseModel):
    """Milliseconds spent per stage; ``queued_ms`` from upload to the start of the batch."""

    queued_ms: float | None = None
    load_ms: float
    checks_ms: float
    predict_ms: float
    total_ms: float
    batch_size: int = 1


class Versions(BaseModel):
    loravet: str
    schema_version: int = SCHEMA_VERSION
    predictors: list[str] = Field(default_factory=list)
    predictor_set: str | None = None
    """The sha256 of the published predictor set the worker loaded (``loravet predictors
    publish``); None when it loaded a directory."""
    device: str | None = None
    """Where the predictors ran (``cpu``, ``cuda:0``); None when none ran."""


class Report(BaseModel):
    """The vetting report of one adapter (DESIGN.md section 7). Only ever written for a finished scan."""

    schema_version: int = SCHEMA_VERSION
    report_id: str
    sha256: str
    config_sha256: str | None = None
    size_bytes: int
    format: str
    scale_source: str
    base_model: BaseModelEntry
    modules: list[ModuleEntry]
    checks: list[CheckEntry]
    predictions: list[PredictionEntry]
    verdict: Verdict
    reasons: list[VerdictReason]
    timings: Timings
    versions: Versions
    created_at: datetime


class PredictorInfo(BaseModel):
    """What a worker loaded, as published in Redis for ``GET /v1/predictors``."""

    predictor_id: str
    version: str
    task: Task
    model_name: str
    base_model: str | None = None
    spec_fingerprint: str
    module_count: int
    threshold: float | None = None
    label_names: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    device: str = "cpu"


# -------------------------------------------------------------------------------------- webhooks
EventType = Literal["report.completed", "report.failed"]
ALL_EVENTS: tuple[EventType, ...] = ("report.completed", "report.failed")
EVENT_TYPES: tuple[str, ...] = ("report.completed", "report.failed")


class ReportCompletedData(BaseModel):
    job_id: str
    report_id: str
    sha256: str
    verdict: Verdict
    reasons: list[str]
    report_url: str | None = None


class ReportFailedData(BaseModel):
    job_id: str
    report_id: str
    sha256: str
    kind: str
    reason: str


class WebhookEvent(BaseModel):
    """A thin event (Standard Webhooks shape ``{type, timestamp, data}``): fetch the report by URL."""

    id: str
    type: EventType
    timestamp: datetime
    data: Annotated[ReportCompletedData | ReportFailedData, Field(union_mode="left_to_right")]


def event_id_for(job_id: str, event_type: str) -> str:
    """Stable per job and type, so a re-run job never sends a second, different event."""
    return "evt_" + hashlib.sha256(f"{job_id}|{event_type}".encode()).hexdigest()[:24]


class WebhookSubscription(BaseModel):
    """A subscription as the API shows it (the secret is shown once, at creation, and never again)."""

    id: str
    url: str
    events: list[EventType]
    created_at: datetime
    active: bool = True
    disabled_reason: str | None = None


class SubscriptionRecord(WebhookSubscription):
    """A subscription as stored in Redis: who owns it and the signing secret."""

    key_id: str
    secret: str

    def to_redis(self) -> dict[str, str]:
        return {
            "id": self.id,
            "key_id": self.key_id,
            "url": self.url,
            "events": ",".join(self.events),
            "secret": self.secret,
            "created_at": self.created_at.isoformat(),
            "active": "1" if self.active else "0",
            "disabled_reason": self.disabled_reason or "",
        }

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes]) -> SubscriptionRecord:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=f["id"],
            key_id=f["key_id"],
            url=f["url"],
            events=[cast(EventType, e) for e in f["events"].split(",") if e],
            secret=f["secret"],
            created_at=datetime.fromisoformat(f["created_at"]),
            active=f.get("active", "1") == "1",
            disabled_reason=f.get("disabled_reason") or None,
        )

    def public(self) -> WebhookSubscription:
        return WebhookSubscription.model_validate(self.model_dump(exclude={"key_id", "secret"}))


DeliveryOutcome = Literal["delivered", "failed", "refused", "gave_up", "disabled", "skipped"]


class DeliveryLogEntry(BaseModel):
    event_id: str
    event_type: str
    attempt: int
    at: datetime
    outcome: DeliveryOutcome
    status_code: int | None = None
    detail: str
    duration_ms: float | None = None
    next_attempt_in_s: int | None = None
