"""``GET /v1/jobs/{id}``: a vetting job's public status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from service.dependencies import ApiKeyDep, StateDep, base_url
from service.operations.jobs import job_or_404
from service.schemas import JobFailure, JobStatusResponse, ProblemBody

router = APIRouter(prefix="/v1", tags=["jobs and reports"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemBody, "description": "unknown id"}
}


@router.get("/jobs/{job_id}", response_model=JobStatusResponse, responses=NOT_FOUND)
def read_job(job_id: str, request: Request, key: ApiKeyDep, state: StateDep) -> JobStatusResponse:
    """Read a vetting job's status: queued, running, finished or failed (with the reason)."""
    view = job_or_404(state.redis, job_id)
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
