"""Request and response bodies of the API that are not part of the worker contract."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.contracts import ALL_EVENTS, EventType, PredictorInfo, WebhookSubscription


class ProblemBody(BaseModel):
    """RFC 9457 problem details, as every error is answered."""

    type: str
    title: str
    status: int
    detail: str


class UploadAccepted(BaseModel):
    job_id: str
    report_id: str = Field(description="the adapter's sha256, or with a config a hash of both")
    sha256: str
    status: Literal["queued", "running", "finished"]
    status_url: str
    report_url: str


class JobFailure(BaseModel):
    kind: str
    reason: str


class JobStatusResponse(BaseModel):
    job_id: str
    status: Literal["queued", "running", "finished", "failed"]
    report_id: str | None
    sha256: str | None
    status_url: str
    report_url: str | None = None
    failure: JobFailure | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class WebhookCreate(BaseModel):
    url: str = Field(
        description="https:// callback; private addresses only when the operator allows them"
    )
    events: list[EventType] = Field(default_factory=lambda: list(ALL_EVENTS), min_length=1)


class WebhookCreated(WebhookSubscription):
    secret: str = Field(description="whsec_... signing secret; shown only in this response")


class PredictorsResponse(BaseModel):
    workers: int = Field(description="live workers that published what they loaded")
    predictors: list[PredictorInfo]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    redis: bool
    workers: int
    detail: str
    store: bool = True
    """The content store (directory or bucket) can be written."""
