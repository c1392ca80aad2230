"""Sign-in and sign-out: a session cookie that carries the id of an accepted API key (never the key)."""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from service.auth import ApiKey, enforce_rate_limit
from service.error_handlers import Problem
from service.settings import hash_api_key
from service.web.frame import (
    HOME,
    SIGN_IN,
    accepted_key_ids,
    page_router,
    read_session,
    render,
    safe_next,
    service_state,
    set_session_cookie,
)
from service.web.sessions import CSRF_FIELD, SESSION_COOKIE, WebSession, csrf_matches

SIGN_IN_ATTEMPTS_PER_MINUTE = 20
"""Sign-in attempts per client address per minute (keys are long and random; this bounds noise)."""

router = page_router()


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
        assert session is not None
        set_session_cookie(response, request, session)
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
        raise Problem(
            403,
            "Not signed out",
            "the sign-out form's security token did not match this session; reload the page and try again.",
            kind="csrf_failed",
        )
    response = RedirectResponse(f"{SIGN_IN}?signed_out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
