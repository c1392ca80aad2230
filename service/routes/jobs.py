"""``GET /v1/jobs/{id}`` and ``GET /v1/reports/{report_id}``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from core import redis_model
from core.contracts import Report, is_sha256_hex
from service.dependencies import ApiKeyDep, StateDep
from service.error_handlers import Problem
from service.job_queue import job_view
from service.routes.adapters import base_url
from service.schemas import JobFailure, JobStatusResponse, ProblemBody

router = APIRouter(prefix="/v1", tags=["jobs and reports"])

_404 = {404: {"model": ProblemBody, "description": "unknown id"}}


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, responses=_404)  # type: ignore[arg-type]
def read_job(job_id: str, request: Request, key: ApiKeyDep, state: StateDep) -> JobStatusResponse:
    """Read a vetting job's status: queued, running, finished or failed (with the reason)."""
    view = job_view(state.redis, job_id) if len(job_id) <= 100 else None
    if view is None:
        raise Problem(
            404,
            "Not found",
            f"no vetting job {job_id!r} (job records expire; reports are kept)",
            kind="job_not_found",
        )
    base = base_url(request, state)
    return JobStatusResponse(
        job_id=view.job_id,
        status=view.status,
        report_id=view.report_id,
        sha256=view.sha256,
        status_url=f"{base}/v1/jobs/{view.job_id}",
        report_url=f"{base}/v1/reports/{view.report_id}"
        if view.status == "finished" and view.report_id
        else None,
        failure=JobFailure(kind=view.failure_kind or "unknown", reason=view.failure_reason or "")
        if view.status == "failed"
        else None,
        enqueued_at=view.enqueued_at,
        started_at=view.started_at,
        ended_at=view.ended_at,
    )


@router.get("/reports/{report_id}", response_model=Report, responses=_404)  # type: ignore[arg-type]
async def read_report(
    report_id: str, request: Request, key: ApiKeyDep, state: StateDep
) -> Response:
    """Read the report of a finished scan (never written for an unfinished or failed one)."""
    if not is_sha256_hex(report_id):
        raise Problem(
            404,
            "Not found",
            "report ids are sha256 digests (64 lowercase hex characters)",
            kind="report_not_found",
        )
    try:
        body = await run_in_threadpool(state.store.get_bytes, "reports", report_id)
    except FileNotFoundError:
        job_id = redis_model.submission_job(state.redis, report_id)
        hint = f"; its job is at {base_url(request, state)}/v1/jobs/{job_id}" if job_id else ""
        raise Problem(
            404,
            "Not found",
            f"no report {report_id}: not uploaded, not finished or failed{hint}",
            kind="report_not_found",
        ) from None
    return Response(content=body, media_type="application/json")
