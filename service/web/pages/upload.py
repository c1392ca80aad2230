"""The upload page, and the JSON route its script posts the file to (the API's intake, with the
session's key: the same streaming, quotas and dedupe as ``POST /v1/adapters``)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from lora_io import LoraFileError
from service.dependencies import base_url
from service.error_handlers import Problem, lora_problem, problem_response
from service.operations.uploads import accept_request_upload
from service.web.frame import (
    WEB_PREFIX,
    PageSession,
    ScriptSession,
    page_router,
    render,
    service_state,
)
from service.web.sessions import CSRF_HEADER, csrf_matches
from service.web.views import PROBLEM_HINTS, human_bytes

router = page_router()
scripts = APIRouter()


@router.get("/upload")
def upload_page(request: Request, signed: PageSession) -> Response:
    session, _ = signed
    state = service_state(request)
    return render(
        request,
        "upload.html",
        page="upload",
        session=session,
        max_upload=human_bytes(state.settings.max_upload_bytes),
        api_url=f"{base_url(request, state)}/v1/adapters",
    )


@scripts.post("/upload")
async def upload(request: Request, signed: ScriptSession) -> Response:
    """The upload script's target: the API's intake with the session's key; answers JSON."""
    session, key = signed
    if not csrf_matches(session, request.headers.get(CSRF_HEADER)):
        return problem_response(
            403,
            "Forbidden",
            "the upload's security token does not match this session",
            "csrf_failed",
            hint=PROBLEM_HINTS["csrf_failed"],
        )
    state = service_state(request)
    try:
        accepted = await accept_request_upload(request, state, key, base_url(request, state))
    except (Problem, LoraFileError) as exc:
        problem = exc if isinstance(exc, Problem) else lora_problem(exc)
        return problem_response(
            problem.status,
            problem.title,
            problem.detail,
            problem.kind,
            problem.headers,
            hint=PROBLEM_HINTS.get(problem.kind),
        )
    report_page = f"{WEB_PREFIX}/reports/{accepted.report_id}"
    job_page = f"{WEB_PREFIX}/jobs/{quote(accepted.job_id, safe='')}" if accepted.job_id else None
    next_page = report_page if accepted.status == "finished" or job_page is None else job_page
    return JSONResponse(
        {
            "job_id": accepted.job_id,
            "report_id": accepted.report_id,
            "sha256": accepted.sha256,
            "status": accepted.status,
            "job_page": job_page,
            "report_page": report_page,
            "next": next_page,
        },
        status_code=200 if accepted.status == "finished" else 202,
        headers={"Cache-Control": "no-store"},
    )
