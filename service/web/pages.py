"""The page routes under ``/ui``: sign-in, upload, job, report, recent reports, predictors.

They use the API's own code paths with the caller's key taken from the session: the upload goes
through :func:`service.routes.adapters.create_adapter` (the same streaming intake, quotas and
dedupe), job status through :func:`service.routes.jobs.read_job`, predictors through
:func:`service.routes.health.read_predictors`, and every signed-in request counts against the key's
rate limit like an API call. Page routes without a session redirect to the sign-in page; the two
JSON routes the scripts call (upload, job status) answer 401 problem+json instead.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from core import redis_model
from core.contracts import PredictorInfo, Report, is_sha256_hex
from core.redis_model import VERDICTS
from lora_io import LoraFileError, load_adapter
from service.auth import ApiKey, enforce_rate_limit
from service.dependencies import ServiceState
from service.error_handlers import Problem, lora_problem, problem_response
from service.routes import adapters, health, jobs
from service.settings import hash_api_key
from service.web.plots import (
    ModuleSpectrum,
    group_colours,
    module_spectra,
    norm_chart_svg,
    singular_value_chart_svg,
    uses_log_scale,
)
from service.web.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SessionCodec,
    WebSession,
    csrf_matches,
)
from service.web.views import (
    JOB_STATUS_DETAIL,
    JOB_STATUS_TEXT,
    PROBLEM_HINTS,
    SCALE_WORDS,
    STATUS_ICONS,
    VERDICT_MEANING,
    check_summary,
    human_bytes,
    module_rows,
    prediction_rows,
    predictor_rows,
    timings_text,
    when,
    why_text,
)

WEB_PREFIX = "/ui"
HOME = f"{WEB_PREFIX}/upload"
SIGN_IN = f"{WEB_PREFIX}/sign-in"
RECENT_PAGE_SIZE = 25
SIGN_IN_ATTEMPTS_PER_MINUTE = 20
"""Sign-in attempts per client address per minute (keys are long and random; this bounds noise)."""
SPECTRA_CACHE_SIZE = 32
LEGEND_GROUPS = 12

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix=WEB_PREFIX, include_in_schema=False)


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page, scripts get 401."""

    def __init__(self, next_path: str, *, json: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.json = json


class PageError(Problem):
    """An error shown as a page (the API's problem, in words, with an optional way on).

    A :class:`Problem` subclass, so a page can raise what the API raises and add a ``link``; the web
    app registers its own handler for it, which Starlette prefers over the API's for this class.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
        link: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, title, detail, kind=kind, headers=headers)
        self.link = link

    @classmethod
    def from_problem(cls, exc: Problem) -> PageError:
        return cls(exc.status, exc.title, exc.detail, kind=exc.kind, headers=exc.headers)


@dataclass
class WebState:
    """Per-app state of the pages: the session codec, templates and a cache of module spectra."""

    codec: SessionCodec
    templates: Environment
    version: str
    spectra: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)


# ------------------------------------------------------------------------------------ helpers
def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.loravet_web
    return state


def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.loravet
    return state


def accepted_key_ids(state: ServiceState) -> frozenset[str]:
    return frozenset(h[:16] for h in state.accepted_key_hashes)


def read_session(request: Request) -> WebSession | None:
    return web_state(request).codec.loads(request.cookies.get(SESSION_COOKIE))


def _is_https(request: Request, state: ServiceState) -> bool:
    public = state.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


def set_session_cookie(response: Response, request: Request, session: WebSession) -> None:
    web, state = web_state(request), service_state(request)
    response.set_cookie(
        SESSION_COOKIE,
        web.codec.dumps(session),
        max_age=web.codec.max_age_s,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_is_https(request, state),
    )


def safe_next(value: str | None) -> str:
    """Only a path of these pages: never another site (``//evil``), never a backslash trick."""
    if (
        value
        and value.startswith(WEB_PREFIX + "/")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) <= 512
        and value.isprintable()
        and not value.startswith(SIGN_IN)
    ):
        return value
    return HOME


def signed_in(request: Request, *, json: bool = False) -> tuple[WebSession, ApiKey]:
    """The session and its key, counted against the key's rate limit; else :class:`SignInRequired`."""
    state = service_state(request)
    session = read_session(request)
    if session is None or session.key_id is None or session.key_id not in accepted_key_ids(state):
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path, json=json)
    key = ApiKey(key_id=session.key_id)
    try:
        enforce_rate_limit(state.redis, key, state.settings.rate_limit_per_minute)
    except Problem as exc:
        if json:
            raise
        raise PageError.from_problem(exc) from None
    except RedisError:
        if json:
            raise  # the API's handler answers 503 problem+json
        raise PageError(
            503,
            "Service unavailable",
            "the job queue (Redis) is not reachable right now; nothing was lost, reload the page in a few seconds.",
            kind="service_unavailable",
            headers={"Retry-After": "5"},
        ) from None
    return session, key


def base_context(page: str, session: WebSession | None, version: str) -> dict[str, Any]:
    """What every template's frame (header, navigation, sign-out form) needs."""
    return {
        "page": page,
        "prefix": WEB_PREFIX,
        "version": version,
        "signed_in": session is not None and session.signed_in,
        "key_id": (session.key_id or "") if session else "",
        "csrf_token": session.csrf if session else "",
    }


def render(
    request: Request,
    template: str,
    *,
    page: str,
    session: WebSession | None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    web = web_state(request)
    html = web.templates.get_template(template).render(
        **base_context(page, session, web.version), **context
    )
    return HTMLResponse(
        html, status_code=status_code, headers={**SECURITY_HEADERS, **(headers or {})}
    )


def render_error(request: Request, exc: PageError) -> HTMLResponse:
    session = read_session(request)
    return render(
        request,
        "error.html",
        page="error",
        session=session if session and session.signed_in else None,
        status_code=exc.status,
        headers=exc.headers,
        error={
            "title": exc.title,
            "detail": exc.detail,
            "status": exc.status,
            "kind": exc.kind,
            "link": exc.link,
        },
    )


def sign_in_redirect(exc: SignInRequired) -> Response:
    if exc.json:
        return problem_response(
            401,
            "Unauthorized",
            "your session has ended or is missing; sign in again",
            "session_required",
            hint=PROBLEM_HINTS["session_required"],
            sign_in_url=SIGN_IN,
        )
    target = SIGN_IN
    if exc.next_path != HOME:
        target += "?" + urlencode({"next": safe_next(exc.next_path)})
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------ sign-in
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@router.get("/sign-in")
def sign_in_page(
    request: Request, next: str | None = None, signed_out: str | None = None
) -> Response:
    state = service_state(request)
    session = read_session(request)
    if session is not None and session.key_id in accepted_key_ids(state):
        return RedirectResponse(safe_next(next), status_code=303)
    fresh = session is None or session.signed_in
    if fresh:
        session = WebSession.anonymous()
    response = render(
        request,
        "sign_in.html",
        page="sign-in",
        session=session,
        next=safe_next(next),
        notice="You are signed out." if signed_out else None,
        error=None,
    )
    if fresh:
        set_session_cookie(response, request, session)  # type: ignore[arg-type]
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    state = service_state(request)
    session = read_session(request)
    form = await request.form()
    next_path = safe_next(str(form.get("next") or ""))
    presented = str(form.get("api_key") or "").strip()

    def again(status: int, title: str, detail: str) -> Response:
        fresh = session if session is not None and not session.signed_in else WebSession.anonymous()
        response = render(
            request,
            "sign_in.html",
            page="sign-in",
            session=fresh,
            status_code=status,
            next=next_path,
            notice=None,
            error={"title": title, "detail": detail},
        )
        set_session_cookie(response, request, fresh)
        return response

    if not csrf_matches(session, str(form.get(CSRF_FIELD) or "")):
        return again(
            403,
            "Please sign in again",
            "the form's security token did not match this browser's session (the page was open too "
            "long, or cookies are blocked for this site); the form has been renewed.",
        )
    client = request.client.host if request.client else "unknown"
    try:
        await run_in_threadpool(
            enforce_rate_limit,
            state.redis,
            ApiKey(key_id=f"sign-in:{client}"),
            SIGN_IN_ATTEMPTS_PER_MINUTE,
        )
    except Problem as exc:
        return again(429, "Too many attempts", exc.detail)
    if not presented or len(presented) > 512:
        return again(422, "No API key", "type or paste an API key of this instance.")
    digest = hash_api_key(presented)
    if digest not in state.accepted_key_hashes:
        return again(
            401,
            "That key is not valid",
            "the API key is not accepted by this loravet instance; ask its operator for a key.",
        )
    response = RedirectResponse(next_path, status_code=303)
    set_session_cookie(response, request, WebSession.for_key(digest[:16]))
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    session = read_session(request)
    form = await request.form()
    if not csrf_matches(session, str(form.get(CSRF_FIELD) or "")):
        raise PageError(
            403,
            "Not signed out",
            "the sign-out form's security token did not match this session; reload the page and try again.",
            kind="csrf_failed",
        )
    response = RedirectResponse(f"{SIGN_IN}?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ------------------------------------------------------------------------------------- upload
@router.get("/upload")
def upload_page(request: Request) -> Response:
    session, _ = signed_in(request)
    state = service_state(request)
    return render(
        request,
        "upload.html",
        page="upload",
        session=session,
        max_upload=human_bytes(state.settings.max_upload_bytes),
        api_url=f"{adapters.base_url(request, state)}/v1/adapters",
    )


@router.post("/upload")
async def upload(request: Request) -> Response:
    """The upload script's target: the API's intake with the session's key; answers JSON."""
    session, key = await run_in_threadpool(signed_in, request, json=True)
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
        accepted = await adapters.create_adapter(request, Response(), key, state)
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


# ---------------------------------------------------------------------------------------- job
def _stored_report(state: ServiceState, report_id: str) -> Report | None:
    try:
        body = state.store.get_bytes("reports", report_id)
    except (FileNotFoundError, ValueError):
        return None
    return Report.model_validate_json(body)


def job_summary(request: Request, key: ApiKey, job_id: str) -> dict[str, Any]:
    """What the job page and its status endpoint show. Raises the API's 404 problem."""
    state = service_state(request)
    view = jobs.read_job(job_id, request, key, state)
    verdict = None
    report_page = None
    if view.status == "finished" and view.report_id:
        report = _stored_report(state, view.report_id)
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
        "failure": {"kind": view.failure.kind, "reason": view.failure.reason}
        if view.failure
        else None,
        "enqueued_at": when(view.enqueued_at),
        "status_path": f"{WEB_PREFIX}/jobs/{quote(view.job_id, safe='')}/status",
    }


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request) -> Response:
    session, key = signed_in(request)
    try:
        job = job_summary(request, key, job_id)
    except Problem as exc:
        raise PageError.from_problem(exc) from None
    return render(request, "job.html", page="job", session=session, job=job)


@router.get("/jobs/{job_id}/status")
def job_status(job_id: str, request: Request) -> JSONResponse:
    _, key = signed_in(request, json=True)
    return JSONResponse(job_summary(request, key, job_id), headers={"Cache-Control": "no-store"})


# ------------------------------------------------------------------------------------- report
def spectra_for(request: Request, report: Report) -> tuple[list[ModuleSpectrum] | None, str]:
    """Module spectra from the stored adapter (cached per report: reports never change)."""
    web, state = web_state(request), service_state(request)
    with web.lock:
        if report.report_id in web.spectra:
            web.spectra.move_to_end(report.report_id)
            return web.spectra[report.report_id], ""
    try:
        data = state.store.get_bytes("adapters", report.sha256)
        config = (
            state.store.get_bytes("configs", report.config_sha256) if report.config_sha256 else None
        )
    except FileNotFoundError:
        return None, "The adapter file is no longer in the store, so its modules cannot be plotted."
    try:
        adapter = load_adapter(
            data,
            config=config,
            allow_non_finite=True,
            max_file_bytes=max(len(data), state.settings.max_upload_bytes),
        )
    except LoraFileError as exc:
        return None, f"The stored adapter could not be read again for the plots: {exc.message}"
    spectra = module_spectra(adapter)
    with web.lock:
        web.spectra[report.report_id] = spectra
        while len(web.spectra) > SPECTRA_CACHE_SIZE:
            web.spectra.popitem(last=False)
    return spectra, ""


def _predictors_by_id(key: ApiKey, state: ServiceState) -> dict[tuple[str, str], PredictorInfo]:
    listed = health.read_predictors(key, state)
    return {(p.predictor_id, p.version): p for p in listed.predictors}


@router.get("/reports/{report_id}")
def report_page(report_id: str, request: Request) -> Response:
    session, key = signed_in(request)
    state = service_state(request)
    if not is_sha256_hex(report_id):
        raise PageError(
            404,
            "No such report",
            "report ids are sha256 digests (64 lowercase hex characters).",
            kind="report_not_found",
        )
    report = _stored_report(state, report_id)
    if report is None:
        job_id = redis_model.submission_job(state.redis, report_id)
        link = (
            {"href": f"{WEB_PREFIX}/jobs/{quote(job_id, safe='')}", "text": "See its job"}
            if job_id
            else None
        )
        raise PageError(
            404,
            "No report yet",
            f"there is no report {report_id}: it was not uploaded, or its scan has not finished, or it failed.",
            kind="report_not_found",
            link=link,
        )
    spectra, plots_note = spectra_for(request, report)
    predictors = _predictors_by_id(key, state) if report.predictions else {}
    return render(
        request,
        "report.html",
        page="report",
        session=session,
        **report_context(report, spectra, plots_note, predictors),
    )


def report_context(
    report: Report,
    spectra: list[ModuleSpectrum] | None,
    plots_note: str,
    predictors: dict[tuple[str, str], PredictorInfo],
) -> dict[str, Any]:
    """Everything the report template shows, from the report, its module spectra and predictors."""
    plots = None
    if spectra:
        colours = group_colours(spectra)
        odd = [s for s in spectra if s.stands_out]
        plots = {
            "norm_svg": Markup(norm_chart_svg(spectra)),  # built with every text escaped
            "sv_svg": Markup(singular_value_chart_svg(spectra)),
            "norm_log": uses_log_scale([s.norm for s in spectra]),
            "odd": bool(odd),
            "odd_text": (
                f"{len(odd)} module(s) stand out from the same module in other layers: "
                + ", ".join(f"#{s.index + 1} {s.name}" for s in odd[:8])
                + (f" and {len(odd) - 8} more" if len(odd) > 8 else "")
            )
            if odd
            else "No module stands out from the same module in other layers"
            + ("." if any(s.z is not None for s in spectra) else " (too few layers to compare)."),
            "legend": list(colours.items())[:LEGEND_GROUPS],
            "legend_more": max(0, len(colours) - LEGEND_GROUPS),
        }
    elif spectra is not None:
        plots_note = "The adapter has no modules to plot."
    return {
        "report": report,
        "created": when(report.created_at),
        "verdict_meaning": VERDICT_MEANING[report.verdict],
        "predictions": prediction_rows(report, predictors),
        "no_prediction_note": (
            f"none of the loaded predictors was trained for this base model "
            f"({report.base_model.title}, spec {report.base_model.spec_fingerprint})"
        ),
        "check_summary": check_summary(report),
        "status_icons": STATUS_ICONS,
        "scale_words": SCALE_WORDS.get(report.scale_source, report.scale_source),
        "size": human_bytes(report.size_bytes),
        "timings": timings_text(report),
        "plots": plots,
        "plots_note": plots_note,
        "modules": module_rows(report, spectra),
        "api_report_url": f"/v1/reports/{report.report_id}",
    }


# ------------------------------------------------------------------------------------- recent
def _query_int(value: str | None, default: int) -> int:
    try:
        return max(1, int(value)) if value is not None else default
    except ValueError:
        return default


@router.get("/reports")
def recent_page(request: Request) -> Response:
    session, _ = signed_in(request)
    state = service_state(request)
    verdict = request.query_params.get("verdict") or None
    if verdict not in (None, *VERDICTS):
        verdict = None
    page = _query_int(request.query_params.get("page"), 1)
    counts, ids = redis_model.recent_reports(
        state.redis, verdict, (page - 1) * RECENT_PAGE_SIZE, RECENT_PAGE_SIZE
    )
    total = counts[verdict]
    rows = []
    for report_id in ids:
        report = _stored_report(state, report_id) if is_sha256_hex(report_id) else None
        if report is None:
            continue
        rows.append(
            {
                "created": when(report.created_at),
                "verdict": report.verdict,
                "href": f"{WEB_PREFIX}/reports/{report.report_id}",
                "short_id": report.report_id[:16] + "…",
                "format": report.format,
                "size": human_bytes(report.size_bytes),
                "base_model": report.base_model.title,
                "modules": len(report.modules),
                "why": why_text(report),
            }
        )

    def href(v: str | None, n: int = 1) -> str:
        query = {k: val for k, val in (("verdict", v), ("page", str(n) if n > 1 else None)) if val}
        return f"{WEB_PREFIX}/reports" + (f"?{urlencode(query)}" if query else "")

    page_count = max(1, -(-int(total) // RECENT_PAGE_SIZE))
    filters = [
        {
            "label": "All",
            "verdict": None,
            "count": counts[None],
            "href": href(None),
            "current": verdict is None,
        }
    ]
    filters += [
        {
            "label": v.capitalize(),
            "verdict": v,
            "count": counts[v],
            "href": href(v),
            "current": verdict == v,
        }
        for v in VERDICTS
    ]
    return render(
        request,
        "recent.html",
        page="recent",
        session=session,
        rows=rows,
        filters=filters,
        caption=f"{int(total)} report(s)"
        + (f" with verdict {verdict}" if verdict else "")
        + ", newest first",
        page_number=page,
        page_count=page_count,
        newer_href=href(verdict, page - 1) if page > 1 else None,
        older_href=href(verdict, page + 1) if page < page_count else None,
        empty_note=(
            f"No report with verdict {verdict} yet."
            if verdict
            else "No report yet: upload an adapter."
        ),
    )


# --------------------------------------------------------------------------------- predictors
@router.get("/predictors")
def predictors_page(request: Request) -> Response:
    session, key = signed_in(request)
    state = service_state(request)
    listed = health.read_predictors(key, state)
    workers = health.live_worker_count(state.redis)
    if workers == 0:
        worker_text = (
            "No worker is alive: uploads wait in the queue until one starts (loravet worker)."
        )
    else:
        worker_text = f"{workers} worker(s) alive; {listed.workers} published what they loaded."
    return render(
        request,
        "predictors.html",
        page="predictors",
        session=session,
        workers=workers,
        worker_text=worker_text,
        predictors=predictor_rows(listed.predictors),
        empty_note=(
            "No predictor is loaded. Every adapter still gets the static checks, and its verdict is "
            "review, because quality and harmful-finetune risk are unknown. Put predictor checkpoints "
            "in the workers' predictor directory (LORAVET_WORKER_PREDICTOR_DIR) and restart them."
        ),
    )


def static_url_for(version: str) -> Any:
    def static_url(name: str) -> str:
        return f"{WEB_PREFIX}/static/{name}?v={quote(version)}"

    return static_url


def sentence(text: object) -> str:
    """An API message as a sentence for a page: a capital first letter and a final full stop."""
    value = str(text or "").strip()
    if not value:
        return value
    value = value[0].upper() + value[1:]
    return value if value[-1] in ".!?…)" else value + "."


def make_templates(directory: str, version: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(directory),
        autoescape=True,  # every template, whatever its name: untrusted text is always escaped
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static_url"] = static_url_for(version)
    env.filters["sentence"] = sentence
    return env
