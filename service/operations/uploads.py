"""Accepting an adapter: receive the body (streamed to a temporary file), validate it without torch,
store it by sha256 and enqueue its vetting, or answer with the report or job that already exists
for the same bytes (and config). Counted in ``loravet_uploads_total`` by outcome."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from core import redis_model
from core.content_store import StoreUnavailableError
from core.contracts import report_id_for
from lora_io import LoraFileError, check_adapter
from service.auth import ApiKey
from service.dependencies import ServiceState
from service.error_handlers import Problem
from service.operations.jobs import PublicStatus, existing_submission, note_interest, submit_vetting
from service.upload_intake import ReceivedUpload, receive_upload


@dataclass(frozen=True)
class UploadOutcome:
    """What became of an upload: its report id and the job that vets (or vetted) it."""

    report_id: str
    sha256: str
    job_id: str
    """Empty when the report exists and its job record has expired."""
    status: Literal["queued", "running", "finished"]
    """Never ``failed``: content whose job failed is enqueued again."""
    created: bool
    """A new job was enqueued (not a duplicate of a live job or an existing report)."""


async def accept_upload(
    state: ServiceState,
    key: ApiKey,
    content_type: str,
    content_length: str | None,
    body: AsyncIterator[bytes],
    base_url: str,
) -> UploadOutcome:
    """Receive, validate, store and enqueue. Raises :class:`Problem` or ``LoraFileError`` (4xx), or
    :class:`StoreUnavailableError` while the content store cannot be used (503)."""
    temp = state.store.temporary_file()
    try:
        upload = await receive_upload(
            content_type,
            content_length,
            body,
            temp,
            max_upload_bytes=state.settings.max_upload_bytes,
            max_config_bytes=state.settings.max_config_bytes,
        )
        return await run_in_threadpool(_accept, state, key, upload, base_url)
    except ClientDisconnect:
        state.metrics.uploads.labels(outcome="client_disconnected").inc()
        raise Problem(
            400,
            "Bad request",
            "the client disconnected before the upload was complete",
            kind="client_disconnected",
        ) from None
    except (Problem, LoraFileError) as exc:
        status = exc.status if isinstance(exc, Problem) else exc.http_status
        state.metrics.uploads.labels(outcome=f"refused_{status}").inc()
        raise
    except StoreUnavailableError:  # answered 503 by the app's handler
        state.metrics.uploads.labels(outcome="refused_503").inc()
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


async def accept_request_upload(
    request: Request, state: ServiceState, key: ApiKey, base_url: str
) -> UploadOutcome:
    """:func:`accept_upload` of a request's body (the API's ``POST /v1/adapters`` and the upload
    page's script)."""
    return await accept_upload(
        state,
        key,
        request.headers.get("content-type", ""),
        request.headers.get("content-length"),
        request.stream(),
        base_url,
    )


def _accept(
    state: ServiceState, key: ApiKey, upload: ReceivedUpload, base_url: str
) -> UploadOutcome:
    redis, store, settings = state.redis, state.store, state.settings
    report_id = report_id_for(upload.sha256, upload.config_sha256)

    def outcome(job_id: str, status: PublicStatus, created: bool = False) -> UploadOutcome:
        assert status != "failed", (
            "existing_submission and submit_vetting never return a failed job"
        )
        return UploadOutcome(report_id, upload.sha256, job_id, status, created)

    if store.exists("reports", report_id):
        state.metrics.uploads.labels(outcome="duplicate_report").inc()
        return outcome(redis_model.submission_job(redis, report_id) or "", "finished")
    live = existing_submission(redis, report_id)
    if live is not None:
        note_interest(redis, live.job_id, key, settings.result_ttl_s)
        state.metrics.uploads.labels(outcome="duplicate_job").inc()
        return outcome(live.job_id, live.status)
    # full validation before anything is stored (numpy only, no torch): load_adapter's checks,
    # without building the factors the API has no use for (the worker builds them)
    check_adapter(upload.path, config=upload.config, max_file_bytes=settings.max_upload_bytes)
    store.put_file("adapters", upload.sha256, upload.path)
    if upload.config is not None and upload.config_sha256 is not None:
        store.put_bytes("configs", upload.config_sha256, upload.config)
    submission = submit_vetting(
        redis,
        settings,
        key,
        report_id=report_id,
        sha256=upload.sha256,
        config_sha256=upload.config_sha256,
        report_url=f"{base_url}/v1/reports/{report_id}",
    )
    state.metrics.uploads.labels(
        outcome="accepted" if submission.created else "duplicate_job"
    ).inc()
    return outcome(submission.job_id, submission.status, submission.created)
