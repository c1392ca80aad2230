"""The job page (it polls its JSON status route until the job ends, then links the report)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service.operations import reports
from service.operations.jobs import job_or_404
from service.web.frame import (
    WEB_PREFIX,
    PageSession,
    ScriptSession,
    page_router,
    render,
    service_state,
)
from service.web.views import JOB_STATUS_DETAIL, JOB_STATUS_TEXT, when

router = page_router()
scripts = APIRouter()


def job_summary(request: Request, job_id: str) -> dict[str, Any]:
    """What the job page and its status endpoint show. Raises the API's 404 problem."""
    state = service_state(request)
    view = job_or_404(state.redis, job_id)
    verdict = None
    report_page = None
    if view.status == "finished" and view.report_id:
        report = reports.stored_report(state, view.report_id)
        verdict = report.verdict if report else None
        report_page = f"{WEB_PREFIX}/reports/{view.report_id}"
    return {
        "job_id": view.job_id,
        "status": view.status,
        "status_text": JOB_STATUS_TEXT[view.status],
        "detail": JOB_STATUS_DETAIL[view.status],
        "done": view.status in ("finished", "failed"),
        "sha256": view.sha256,
        "report_id": view.report_id,
        "report_page": report_page,
        "verdict": verdict,
        "failure": {"kind": view.failure_kind or "unknown", "reason": view.failure_reason or ""}
        if view.status == "failed"
        else None,
        "enqueued_at": when(view.enqueued_at),
        "status_path": f"{WEB_PREFIX}/jobs/{quote(view.job_id, safe='')}/status",
    }


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, signed: PageSession) -> Response:
    session, _ = signed
    return render(
        request, "job.html", page="job", session=session, job=job_summary(request, job_id)
    )


@scripts.get("/jobs/{job_id}/status")
def job_status(job_id: str, request: Request, signed: ScriptSession) -> JSONResponse:
    return JSONResponse(job_summary(request, job_id), headers={"Cache-Control": "no-store"})
