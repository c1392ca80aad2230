"""The FastAPI app factory: ``create_app(settings)``.

    uvicorn --factory service.main:create_app        # settings from LORAVET_API_* / .env
    loravet api --host 0.0.0.0 --port 8000           # the same, with argument parsing

``service.main.app`` builds an app from the environment on first access (for ``uvicorn
service.main:app``); importing this module creates nothing and never imports torch.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from redis import Redis

from core.content_store import open_content_store
from core.contracts import loravet_version
from service.dependencies import ServiceState
from service.error_handlers import install_error_handlers
from service.metrics import ServiceMetrics
from service.routes import adapters, health, jobs, predictors, reports, webhooks
from service.settings import ApiSettings
from service.web import mount_web

DESCRIPTION = """Self-hosted vetting for LoRA adapters.

Upload a `.safetensors` LoRA to `POST /v1/adapters`; poll `GET /v1/jobs/{id}` or subscribe a webhook;
read the report at `GET /v1/reports/{report_id}`. Every route but `/healthz`, `/readyz`, `/metrics`
and the docs needs an API key (`X-API-Key` or `Authorization: Bearer`). Errors are
`application/problem+json`.
"""


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the API around ``settings`` (default: read ``LORAVET_API_*`` from the environment)."""
    settings = settings or ApiSettings()
    logging.getLogger("loravet").setLevel(settings.log_level)
    redis = Redis.from_url(settings.redis_url, health_check_interval=30)
    app = FastAPI(title="loravet", version=loravet_version(), description=DESCRIPTION)
    app.state.loravet = ServiceState(
        settings=settings,
        redis=redis,
        store=open_content_store(settings),
        metrics=ServiceMetrics(redis),
        accepted_key_hashes=settings.accepted_key_hashes(),
    )
    install_error_handlers(app)
    app.include_router(adapters.router)
    app.include_router(jobs.router)
    app.include_router(reports.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(predictors.router)
    mount_web(app)  # the pages for people under /ui (docs/pages.md)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app()
    raise AttributeError(name)
