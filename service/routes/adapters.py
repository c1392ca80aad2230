"""``POST /v1/adapters``: stream, check, store by sha256, enqueue (or return the existing job/report)."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from core import redis_model
from core.contracts import report_id_for
from lora_io import LoraFileError, check_adapter
from service.auth import ApiKey
from service.dependencies import ApiKeyDep, ServiceState, StateDep
from service.error_handlers import Problem
from service.job_queue import existing_submission, note_interest, submit_vetting
from service.schemas import ProblemBody, UploadAccepted
from service.upload_intake import ReceivedUpload, receive_upload

router = APIRouter(prefix="/v1", tags=["adapters"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the LoRA .safetensors file",
                        },
                        "config": {
                            "type": "string",
                            "format": "binary",
                            "description": "optional adapter_config.json",
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_ERRORS = {
    code: {"model": ProblemBody, "content": {"application/problem+json": {}}, "description": text}
    for code, text in {
        401: "missing or invalid API key",
        413: "file larger than the limit",
        415: "not a safetensors file (pickles are named as such)",
        422: "not a valid LoRA adapter, or a malformed upload",
        429: "rate limit or job quota reached (see Retry-After)",
    }.items()
}


def base_url(request: Request, state: ServiceState) -> str:
    return (state.settings.public_url or str(request.base_url)).rstrip("/")


@router.post(
    "/adapters",
    status_code=202,
    response_model=UploadAccepted,
    responses={
        200: {"model": UploadAccepted, "description": "already vetted: the report exists"},
        **_ERRORS,
    },  # type: ignore[dict-item]
    openapi_extra=_UPLOAD_BODY,
)
async def create_adapter(
    request: Request, response: Response, key: ApiKeyDep, state: StateDep
) -> UploadAccepted:
    """Upload a LoRA adapter (multipart `file` + optional `config`, or a raw body) for vetting."""
    temp = state.store.temporary_file()
    try:
        upload = await receive_upload(
            request.headers.get("content-type", ""),
            request.headers.get("content-length"),
            request.stream(),
            temp,
            max_upload_bytes=state.settings.max_upload_bytes,
            max_config_bytes=state.settings.max_config_bytes,
        )
        return await run_in_threadpool(
            _accept, state, key, upload, base_url(request, state), response
        )
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
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _accept(
    state: ServiceState, key: ApiKey, upload: ReceivedUpload, base: str, response: Response
) -> UploadAccepted:
    redis, store, settings = state.redis, state.store, state.settings
    report_id = report_id_for(upload.sha256, upload.config_sha256)
    urls = {"report_url": f"{base}/v1/reports/{report_id}"}

    def answer(job_id: str, status: str) -> UploadAccepted:
        status_url = f"{base}/v1/jobs/{job_id}"
        if status == "finished":
            response.status_code = 200
        else:
            response.headers["Location"] = status_url
        return UploadAccepted(
            job_id=job_id,
            report_id=report_id,
            sha256=upload.sha256,
            status=status,
            status_url=status_url,
            **urls,  # type: ignore[arg-type]
        )

    if store.exists("reports", report_id):
        state.metrics.uploads.labels(outcome="duplicate_report").inc()
        return answer(redis_model.submission_job(redis, report_id) or "", "finished")
    live = existing_submission(redis, report_id)
    if live is not None:
        note_interest(redis, live.job_id, key, settings.result_ttl_s)
        state.metrics.uploads.labels(outcome="duplicate_job").inc()
        return answer(live.job_id, live.status)
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
        report_url=urls["report_url"],
    )
    state.metrics.uploads.labels(
        outcome="accepted" if submission.created else "duplicate_job"
    ).inc()
    return answer(submission.job_id, submission.status)
