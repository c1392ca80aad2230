"""What every page shares: paths, security headers, the session dependency, rendering and errors.

A page answers with HTML; errors are the API's :class:`service.error_handlers.Problem` (one
vocabulary), rendered as a page when raised while answering a page (the session dependency marks the
request) and as problem+json otherwise (the two JSON routes the pages' scripts call).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader
from redis.exceptions import RedisError

from service.auth import ApiKey, enforce_rate_limit
from service.dependencies import ServiceState
from service.error_handlers import Problem, problem_response
from service.web.sessions import SESSION_COOKIE, SessionCodec, WebSession
from service.web.views import PROBLEM_HINTS

WEB_PREFIX = "/ui"
HOME = f"{WEB_PREFIX}/upload"
SIGN_IN = f"{WEB_PREFIX}/sign-in"

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


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in page, scripts get 401."""

    def __init__(self, next_path: str, *, json: bool = False) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.json = json


@dataclass
class WebState:
    """Per-app state of the pages: the session codec, templates and a cache of module spectra."""

    codec: SessionCodec
    templates: Environment
    version: str
    spectra: OrderedDict[str, Any] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)


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
    except RedisError:
        if json:
            raise  # the API's handler answers 503 problem+json
        raise Problem(
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


def render_problem(request: Request, exc: Problem) -> HTMLResponse:
    """A :class:`Problem` raised while answering a page, shown as a page (with its ``link``)."""
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


def answers_html(request: Request) -> None:
    """Router dependency of the page routes: a :class:`Problem` raised while answering one is shown
    as a page (``service.error_handlers`` asks ``request.state.html_errors``), not problem+json."""
    request.state.html_errors = True


def page_router() -> APIRouter:
    """The router of a page group: its errors are shown as pages (:func:`answers_html`)."""
    return APIRouter(dependencies=[Depends(answers_html)])


def page_session(request: Request) -> tuple[WebSession, ApiKey]:
    return signed_in(request)


def script_session(request: Request) -> tuple[WebSession, ApiKey]:
    return signed_in(request, json=True)


PageSession = Annotated[tuple[WebSession, ApiKey], Depends(page_session)]
"""A page's session and key (no session: a redirect to sign in; errors rendered as pages)."""
ScriptSession = Annotated[tuple[WebSession, ApiKey], Depends(script_session)]
"""The same for the JSON routes the pages' scripts call (no session: 401 problem+json)."""


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
