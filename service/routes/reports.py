"""``GET /v1/reports/{report_id}``: the report of a finished scan."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from core.contracts import Report
from service.dependencies import ApiKeyDep, StateDep, base_url
from service.error_handlers import Problem
from service.operations import reports
from service.routes.jobs import NOT_FOUND

router = APIRouter(prefix="/v1", tags=["jobs and reports"])


@router.get("/reports/{report_id}", response_model=Report, responses=NOT_FOUND)
async def read_report(
    report_id: str, request: Request, key: ApiKeyDep, state: StateDep
) -> Response:
    """Read the report of a finished scan (never written for an unfinished or failed one)."""
    reports.check_report_id(report_id)
    body = await run_in_threadpool(reports.report_bytes, state, report_id)
    if body is None:
        job_id = reports.pending_job(state, report_id)
        hint = f"; its job is at {base_url(request, state)}/v1/jobs/{job_id}" if job_id else ""
        raise Problem(
            404,
            "Not found",
            f"no report {report_id}: not uploaded, not finished or failed{hint}",
            kind="report_not_found",
        )
    return Response(content=body, media_type="application/json")
