"""Web pages for people, served by the API process: sign-in, upload, job, report, recent, predictors.

Server-rendered (Jinja2 templates, one CSS and one small vanilla JS file served from ``/ui/static``;
nothing is fetched from outside the service, so the pages work offline). ``mount_web(app)`` is
called by :func:`service.main.create_app`. See docs/pages.md.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from core.contracts import loravet_version
from service.web.frame import (
    HOME,
    WEB_PREFIX,
    SignInRequired,
    WebState,
    make_templates,
    render_problem,
    sign_in_redirect,
)
from service.web.pages import router
from service.web.sessions import SessionCodec

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

__all__ = ["WEB_PREFIX", "mount_web"]


def mount_web(app: FastAPI) -> None:
    """Add the pages, their static files and their error handling to an app built by ``create_app``.

    The session secret is ``LORAVET_API_SESSION_SECRET`` when set (needed when several API replicas
    serve the pages, or for sessions to survive a restart), else a random one per process.
    """
    settings = app.state.loravet.settings
    configured = getattr(settings, "session_secret", None)
    secret = configured.get_secret_value().encode() if configured else secrets.token_bytes(32)
    version = loravet_version()
    app.state.loravet_web = WebState(
        codec=SessionCodec(secret),
        templates=make_templates(str(TEMPLATES_DIR), version),
        version=version,
    )

    async def _sign_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return sign_in_redirect(exc)

    app.add_exception_handler(SignInRequired, _sign_in)
    app.state.render_problem = render_problem  # Problems raised by pages (service.error_handlers)
    app.mount(f"{WEB_PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse(HOME, status_code=303)
