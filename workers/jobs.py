"""The functions RQ runs, enqueued by dotted path with JSON arguments (ids and store keys only).

* :func:`vet_adapter`: one vetting job. Under the resident worker its report was already computed
  in a batched forward pass and is only picked up here; under a plain ``rq worker`` it is computed
  here. Stores the report, then emits ``report.completed``.
* :func:`on_vet_failure`: RQ's ``on_failure`` callback. On a *final* failure (bad input, or no
  retries left) it records the reason the API shows and emits ``report.failed``.
* :func:`deliver_webhook`: one delivery attempt; returns an RQ ``Retry`` when another is due.

Bad input (the file is not a valid LoRA) is a permanent failure: the job clears its retries before
raising, so RQ never runs it again. An unavailable content store is waited out (up to
``store_outage_wait_s``, heartbeats going on) without spending a retry. Everything else is retried
with backoff.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from redis import Redis
from rq import Retry, get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from core import redis_model
from core.content_store import StoreUnavailableError
from core.contracts import (
    Report,
    ReportCompletedData,
    ReportFailedData,
    VetJobArgs,
    WebhookDeliveryArgs,
    WebhookEvent,
    event_id_for,
)
from lora_io import LoraFileError
from workers.vetting_pipeline import PredictorFailedError
from workers.webhook_delivery import deliver, delivery_retry, emit_event
from workers.worker_runtime import get_runtime

log = logging.getLogger("loravet.worker")

FAILURE_RECORD_TTL_S = 30 * 24 * 3600
STORE_BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 5.0)
"""Pauses between tries while the content store is unavailable (the last one repeats)."""
UNTRIED = object()


class VettingRefusedError(Exception):
    """Raised by a job whose input can never be vetted; its message is the reason shown to the user."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def vet_adapter(job_args: dict[str, Any]) -> dict[str, Any]:
    """Vet one stored adapter, store the report, notify subscribers. Returns a small summary."""
    job = get_current_job()
    runtime = get_runtime()
    try:
        args = VetJobArgs.model_validate(job_args)
    except ValueError as exc:
        _make_permanent(job)
        raise VettingRefusedError(
            "bad_job_arguments", f"job arguments do not match VetJobArgs: {exc}"
        ) from None
    outcome = runtime.take_outcome(job.id) if job is not None else None
    outcome = wait_out_store_outage(
        lambda: runtime.vet([args])[0],
        runtime.settings.store_outage_wait_s,
        first=UNTRIED if outcome is None else outcome,
    )
    if isinstance(outcome, LoraFileError):
        _make_permanent(job)
        raise VettingRefusedError(outcome.kind, outcome.message) from outcome
    if isinstance(outcome, BaseException):
        raise outcome
    report: Report = outcome
    body = report.model_dump_json(indent=2).encode()
    wait_out_store_outage(
        lambda: runtime.store.put_bytes("reports", report.report_id, body),
        runtime.settings.store_outage_wait_s,
    )
    redis_model.index_report(runtime.redis, report)
    job_id = job.id if job is not None else f"local-{report.report_id[:16]}"
    _finish_bookkeeping(runtime.redis, job_id, args)
    emit_event(
        runtime.redis,
        WebhookEvent(
            id=event_id_for(job_id, "report.completed"),
            type="report.completed",
            timestamp=datetime.now(UTC),
            data=ReportCompletedData(
                job_id=job_id,
                report_id=report.report_id,
                sha256=report.sha256,
                verdict=report.verdict,
                reasons=[r.message for r in report.reasons],
                report_url=args.report_url,
            ),
        ),
        job_id,
        webhook_timeout_s=runtime.settings.webhook_timeout_s,
    )
    return {"report_id": report.report_id, "sha256": report.sha256, "verdict": report.verdict}


def wait_out_store_outage(action: Callable[[], Any], wait_s: float, *, first: Any = UNTRIED) -> Any:
    """``action()``'s result, tried again while the content store is unavailable (raised, or
    returned as an outcome) for up to ``wait_s`` seconds; then the last
    :class:`StoreUnavailableError` is raised and RQ's retries take over. ``first``: an outcome
    already in hand (a batch's), used instead of a first try."""
    deadline = time.monotonic() + wait_s
    outcome, pauses = first, 0
    while True:
        if outcome is UNTRIED:
            try:
                outcome = action()
            except StoreUnavailableError as exc:
                outcome = exc
        if not isinstance(outcome, StoreUnavailableError):
            if pauses:
                log.info("content store available again after %d tries", pauses + 1)
            return outcome
        left = deadline - time.monotonic()
        if left <= 0:
            raise outcome
        if pauses == 0:
            log.warning("content store unavailable (%s); waiting up to %g s", outcome, wait_s)
        time.sleep(min(left, STORE_BACKOFF_S[min(pauses, len(STORE_BACKOFF_S) - 1)]))
        outcome, pauses = UNTRIED, pauses + 1


def on_vet_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback (also run for jobs whose worker died): act only on the final failure."""
    if job.retries_left is not None and job.retries_left > 0:
        log.warning(
            "job %s failed (%s), %d retr%s left",
            job.id,
            exc_type.__name__ if exc_type else "?",
            job.retries_left,
            "y" if job.retries_left == 1 else "ies",
        )
        return
    kind, reason = failure_reason(exc_value, job)
    redis_model.record_failure(connection, job.id, kind, reason, FAILURE_RECORD_TTL_S)
    try:
        args = VetJobArgs.model_validate(job.args[0])
    except (ValueError, IndexError, TypeError):
        return
    _finish_bookkeeping(connection, job.id, args)
    emit_event(
        connection,
        WebhookEvent(
            id=event_id_for(job.id, "report.failed"),
            type="report.failed",
            timestamp=datetime.now(UTC),
            data=ReportFailedData(
                job_id=job.id,
                report_id=args.report_id,
                sha256=args.sha256,
                kind=kind,
                reason=reason,
            ),
        ),
        job.id,
    )


def failure_reason(exc: BaseException | None, job: Job) -> tuple[str, str]:
    """(kind, reason) for the API and the ``report.failed`` event: what went wrong, without internals."""
    if isinstance(exc, VettingRefusedError):
        return exc.kind, exc.reason
    if isinstance(exc, JobTimeoutException):
        return (
            "timeout",
            f"vetting took longer than the job timeout ({job.timeout} s) on every attempt",
        )
    if isinstance(exc, AbandonedJobError):
        return (
            "worker_lost",
            "the worker running this job stopped before it finished, on every attempt",
        )
    if isinstance(exc, PredictorFailedError):
        return "predictor_failed", str(exc)
    return (
        "internal_error",
        "vetting failed with an internal error on every attempt; the worker logs have the details",
    )


def deliver_webhook(job_args: dict[str, Any]) -> dict[str, Any] | Retry:
    """One delivery attempt of one event to one subscription."""
    job = get_current_job()
    runtime = get_runtime()
    args = WebhookDeliveryArgs.model_validate(job_args)
    attempt = 1 + ((job.number_of_retries or 0) if job is not None else 0)
    entry = deliver(runtime.redis, args, runtime.settings, attempt=attempt)
    retry = delivery_retry(entry, runtime.settings)
    if retry is not None:
        return retry
    return {"outcome": entry.outcome, "status_code": entry.status_code, "attempt": attempt}


def _make_permanent(job: Job | None) -> None:
    """Clear the retries of the running job so RQ fails it for good (the worker holds this object)."""
    if job is not None:
        job.retries_left = 0


def _finish_bookkeeping(redis: Redis, job_id: str, args: VetJobArgs) -> None:
    """Free the per-key quota slots of this job and count its upload-to-report latency."""
    elapsed = max(0.0, (datetime.now(UTC) - args.submitted_at).total_seconds())
    redis_model.finish_job(redis, job_id, elapsed)
