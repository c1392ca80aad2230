"""The API's side of the queue: enqueue vetting by dotted path (JSON serializer), dedupe, job status.

The only module of ``service`` that touches RQ. Jobs carry ids and store keys only; the job code is
named by string (``workers.jobs.vet_adapter``) so the API never imports it, nor torch.

Deduplication: ``loravet:submission:<report_id>`` points at the job for those bytes (and config).
A second upload of the same content gets the stored report, or the job already queued or running;
only when the earlier job failed (or expired) is a new one enqueued.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from redis import Redis
from redis.exceptions import WatchError
from rq import Callback, Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from core import redis_model
from core.contracts import VET_FAILURE_CALLBACK, VET_FUNCTION, VET_QUEUE, VetJobArgs
from service.auth import ApiKey
from service.error_handlers import Problem
from service.settings import ApiSettings

PublicStatus = Literal["queued", "running", "finished", "failed"]

_STATUS_MAP: dict[str, PublicStatus] = {
    JobStatus.QUEUED: "queued",
    JobStatus.DEFERRED: "queued",
    JobStatus.SCHEDULED: "queued",  # waiting for a retry
    JobStatus.STARTED: "running",
    JobStatus.FINISHED: "finished",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "failed",
    JobStatus.CANCELED: "failed",
}


@dataclass(frozen=True)
class Submission:
    job_id: str
    status: PublicStatus
    created: bool


@dataclass(frozen=True)
class JobView:
    """What ``GET /v1/jobs/{id}`` shows."""

    job_id: str
    status: PublicStatus
    report_id: str | None
    sha256: str | None
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    failure_kind: str | None = None
    failure_reason: str | None = None


def vet_queue(redis: Redis) -> Queue:
    return Queue(VET_QUEUE, connection=redis, serializer=JSONSerializer)


_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
"""What RQ accepts as a job id (it raises ``ValueError`` on anything else: a client's typo is a 404)."""


def fetch_job(redis: Redis, job_id: str) -> Job | None:
    if not _JOB_ID.fullmatch(job_id):
        return None
    try:
        return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
    except NoSuchJobError:
        return None


def public_status(job: Job) -> PublicStatus:
    return _STATUS_MAP.get(job.get_status(refresh=False), "queued")


def job_view(redis: Redis, job_id: str) -> JobView | None:
    job = fetch_job(redis, job_id)
    if job is None or job.func_name != VET_FUNCTION:
        return None
    status = public_status(job)
    meta = job.get_meta(refresh=False) or {}
    kind = reason = None
    if status == "failed":
        record = redis_model.job_failure(redis, job_id)
        kind = record.get("kind", "unknown")
        reason = record.get(
            "reason", "the job failed without a recorded reason; the worker logs have the details"
        )
    return JobView(
        job_id=job.id,
        status=status,
        report_id=meta.get("report_id"),
        sha256=meta.get("sha256"),
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        failure_kind=kind,
        failure_reason=reason,
    )


def existing_submission(redis: Redis, report_id: str) -> Submission | None:
    """The live (queued, running or finished) job for this content, if any."""
    job_id = redis_model.submission_job(redis, report_id)
    if job_id is None:
        return None
    job = fetch_job(redis, job_id)
    if job is None:
        return None
    status = public_status(job)
    if status == "failed":
        return None
    return Submission(job.id, status, created=False)


def note_interest(redis: Redis, job_id: str, key: ApiKey, ttl_s: int) -> None:
    """Remember that this key asked for this job: its webhooks hear about the result."""
    redis_model.note_interest(redis, job_id, key.key_id, ttl_s)


def check_quota(redis: Redis, settings: ApiSettings, key: ApiKey) -> None:
    """429 when this key has too many unfinished jobs or the queue as a whole is full."""
    depth = vet_queue(redis).count
    if depth >= settings.max_queue_depth:
        raise Problem(
            429, "Too many requests", f"the vetting queue is full ({depth} jobs waiting); retry later",
            kind="queue_full", headers={"Retry-After": "30"},
        )  # fmt: skip
    if redis_model.active_job_count(redis, key.key_id) < settings.max_active_jobs_per_key:
        return
    # prune ids whose jobs finished or vanished (a worker normally removes them itself)
    for job_id in redis_model.active_jobs(redis, key.key_id):
        job = fetch_job(redis, job_id)
        if job is None or public_status(job) in ("finished", "failed"):
            redis_model.release_active_job(redis, key.key_id, job_id)
    active = redis_model.active_job_count(redis, key.key_id)
    if active >= settings.max_active_jobs_per_key:
        raise Problem(
            429, "Too many requests",
            f"this API key has {active} unfinished vetting jobs, its limit is {settings.max_active_jobs_per_key}; "
            "retry when some have finished",
            kind="job_quota_exceeded", headers={"Retry-After": "10"},
        )  # fmt: skip


def submit_vetting(
    redis: Redis,
    settings: ApiSettings,
    key: ApiKey,
    *,
    report_id: str,
    sha256: str,
    config_sha256: str | None,
    report_url: str | None,
) -> Submission:
    """Enqueue a vetting job for stored content, or return the one already live for it."""
    pointer = redis_model.submission_key(report_id)
    while True:
        live = existing_submission(redis, report_id)
        if live is not None:
            note_interest(redis, live.job_id, key, settings.result_ttl_s)
            return live
        check_quota(redis, settings, key)
        job_id = f"vet_{uuid.uuid4().hex}"
        with redis.pipeline() as p:
            try:
                p.watch(pointer)
                previous = redis_model.submission_job(p, report_id)
                if previous is not None and existing_submission(redis, report_id) is not None:
                    continue  # someone else enqueued it a moment ago
                p.multi()
                redis_model.record_submission(
                    p, report_id, job_id, key.key_id, settings.result_ttl_s
                )
                p.execute()
            except WatchError:
                continue
        break
    args = VetJobArgs(
        report_id=report_id,
        sha256=sha256,
        config_sha256=config_sha256,
        submitted_at=datetime.now(UTC),
        report_url=report_url,
    )
    retry = (
        Retry(max=settings.vet_retries, interval=settings.vet_retry_intervals)
        if settings.vet_retries > 0
        else None
    )
    vet_queue(redis).enqueue_call(
        VET_FUNCTION,
        args=(args.model_dump(mode="json"),),
        job_id=job_id,
        timeout=settings.job_timeout_s,
        retry=retry,
        result_ttl=settings.result_ttl_s,
        failure_ttl=settings.result_ttl_s,
        on_failure=Callback(VET_FAILURE_CALLBACK),
        description=f"vet {report_id[:16]}",
        meta={"report_id": report_id, "sha256": sha256},
    )
    return Submission(job_id, "queued", created=True)


def job_or_404(redis: Redis, job_id: str) -> JobView:
    """The vetting job's view, or the 404 problem the API and the job page both answer with."""
    view = job_view(redis, job_id) if len(job_id) <= 100 else None
    if view is None:
        raise Problem(
            404,
            "Not found",
            f"no vetting job {job_id!r} (job records expire; reports are kept)",
            kind="job_not_found",
        )
    return view
