"""The page routes under ``/ui``, one module per page group: ``sign_in``, ``upload``, ``jobs``,
``reports`` (a report and the recent ones) and ``predictors``.

They share the service layer with the JSON API (``service.operations``: the same streaming intake,
quotas and dedupe, job status, stored reports, live predictors) with the caller's key taken from
the session (``service.web.frame.PageSession``), and every signed-in request counts against the
key's rate limit like an API call. Page routes without a session redirect to the sign-in page; the
two JSON routes the scripts call (upload, job status) answer 401 problem+json instead.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.web.frame import WEB_PREFIX
from service.web.pages import jobs, predictors, reports, sign_in, upload

router = APIRouter(prefix=WEB_PREFIX, include_in_schema=False)
for module in (sign_in, upload, jobs, reports, predictors):
    router.include_router(module.router)
for module in (upload, jobs):
    router.include_router(module.scripts)
