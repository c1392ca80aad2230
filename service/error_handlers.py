"""Every error leaves as ``application/problem+json`` (RFC 9457: type, title, status, detail).

Messages say what is wrong and what is accepted. ``lora_io`` errors map to 413/415/422 through their
own ``http_status``; Redis or the content store out of reach is a 503 with ``Retry-After`` (the
operator's details, such as the store's endpoint, stay in the log); anything unexpected becomes a
bare 500 whose details stay in the server log (:class:`CatchAllMiddleware`), so no traceback ever
leaves the process.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.content_store import StoreUnavailableError
from lora_io import LoraFileError

log = logging.getLogger("loravet.api")

PROBLEM_TYPE_BASE = "urn:loravet:problem:"


class Problem(Exception):
    """An error the service answers with; raise it from routes, pages, dependencies and the service
    layer. The one vocabulary of errors: problem+json for the API and the pages' scripts, an error
    page (with ``link``, a way on) for a page (see :func:`install_error_handlers`)."""

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
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.kind = kind or title.lower().replace(" ", "_")
        self.headers = headers or {}
        self.link = link


def problem_response(
    status: int,
    title: str,
    detail: str,
    kind: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": PROBLEM_TYPE_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type="application/problem+json"
    )


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def lora_problem(exc: LoraFileError) -> Problem:
    """The API's answer to a file ``lora_io`` refused."""
    title = {
        413: "File too large",
        415: "Not a safetensors file",
        422: "Not a valid LoRA adapter",
    }.get(exc.http_status, _TITLES.get(exc.http_status, "Error"))
    return Problem(exc.http_status, title, exc.message, kind=exc.kind)


def install_error_handlers(app: FastAPI) -> None:
    """problem+json for every error; a :class:`Problem` raised while answering a page (the page
    routers mark ``request.state.html_errors``) goes to the page renderer ``mount_web`` sets as
    ``app.state.render_problem``."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        render = getattr(request.app.state, "render_problem", None)
        if render is not None and getattr(request.state, "html_errors", False):
            page: Response = render(request, exc)
            return page
        return problem_response(exc.status, exc.title, exc.detail, exc.kind, exc.headers)

    @app.exception_handler(LoraFileError)
    async def _lora(request: Request, exc: LoraFileError) -> JSONResponse:
        p = lora_problem(exc)
        return problem_response(p.status, p.title, p.detail, p.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
        return problem_response(
            422, "Invalid request", "; ".join(parts) or "the request is invalid", "invalid_request"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = _TITLES.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.url.path}; the API is described at /docs and /openapi.json"
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return problem_response(
            exc.status_code,
            title,
            detail,
            title.lower().replace(" ", "_"),
            headers or None,
        )

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        # Redis restarting or unreachable: a temporary condition, not a bug (503, retry)
        log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(
            503,
            "Service unavailable",
            "the job queue (Redis) is not reachable right now; nothing was lost, retry in a few seconds",
            "service_unavailable",
            {"Retry-After": "5"},
        )

    @app.exception_handler(StoreUnavailableError)
    async def _store_down(request: Request, exc: StoreUnavailableError) -> Response:
        # the object store unreachable or refusing our credentials: the operator's problem, not the
        # client's; its message (endpoint, bucket) is for the log, not for callers
        log.warning("content store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return await _problem(request, store_unavailable_problem())

    app.add_middleware(CatchAllMiddleware)
    document_problem_responses(app)


def store_unavailable_problem() -> Problem:
    """The answer while the content store cannot be used (:class:`StoreUnavailableError`)."""
    return Problem(
        503,
        "Service unavailable",
        "the content store (where uploads and reports are kept) is unavailable right now; nothing "
        "was stored, retry in a few seconds",
        kind="store_unavailable",
        headers={"Retry-After": "5"},
    )


def allowed_methods(request: Request) -> str:
    """The ``Allow`` header of a 405: the methods of every operation on this path, not just the first
    route's (read from the app's OpenAPI, whose paths are the routes' own templates)."""
    methods: set[str] = set()
    for template, ops in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in ops}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_PROBLEM_RESPONSES = {
    "400": "malformed request body",
    "401": "missing or invalid API key",
    "422": "invalid request (the detail names the field)",
    "429": "rate limit or job quota reached (see Retry-After)",
    "500": "internal error (no details leave the server; its log has them)",
    "503": "the job queue (Redis) or the content store is unreachable for a moment (see Retry-After)",
}


def document_problem_responses(app: FastAPI) -> None:
    """Make the served OpenAPI say what the handlers above do: errors are ``application/problem+json``
    (not FastAPI's default ``application/json`` validation body), every operation may answer 500 and
    503, operations that need a key 401 and 429, and operations with input 400 and 422."""
    build = app.openapi
    done = False

    def openapi() -> dict[str, Any]:
        nonlocal done
        schema = build()
        if not done:
            _add_problem_responses(schema)
            done = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def _add_problem_responses(schema: dict[str, Any]) -> None:
    from service.schemas import ProblemBody

    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ProblemBody", ProblemBody.model_json_schema())
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            codes = ["500", "503"]
            if op.get("security"):
                codes += ["401", "429"]
            if op.get("parameters") or op.get("requestBody"):
                codes.append("422")
            if op.get("requestBody"):
                codes.append("400")
            for code in codes:
                responses.setdefault(code, {"description": _PROBLEM_RESPONSES[code]})
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                content = response.get("content") or {}
                json_schema = (content.get("application/json") or {}).get("schema", {})
                ref = json_schema.get("$ref", "")
                if (
                    not content
                    or ref.endswith(("/HTTPValidationError", "/ProblemBody"))
                    or ("application/problem+json" in content)
                ):
                    response["content"] = problem


class CatchAllMiddleware:
    """Turns any unhandled exception into a 500 problem without details, logged here with its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                return  # headers are gone; the server closes the connection
            response = problem_response(
                500,
                "Internal server error",
                "the server failed to handle this request; the operator's logs have the details",
                "internal_error",
            )
            await response(scope, receive, send)
