"""``/healthz``, ``/readyz``, ``/metrics``: no API key, for orchestrators and scrapers."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from core.content_store import StoreUnavailableError
from service.dependencies import StateDep
from service.operations.predictors import live_worker_count
from service.schemas import Readiness

router = APIRouter(tags=["operations"])
log = logging.getLogger("loravet.api")


@router.get("/healthz")
def read_health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def read_readiness(state: StateDep, response: Response) -> Readiness:
    """Readiness: Redis answers, the content store can be written, and a worker is alive."""
    try:
        state.redis.ping()
        workers = live_worker_count(state.redis)
    except RedisError:
        response.status_code = 503
        return Readiness(status="not_ready", redis=False, workers=0, detail="Redis is unreachable")
    try:
        state.store.check()
    except StoreUnavailableError as exc:
        log.warning("readiness: %s", exc)  # the endpoint and bucket stay in the log
        response.status_code = 503
        return Readiness(
            status="not_ready",
            redis=True,
            workers=workers,
            store=False,
            detail="the content store is unavailable (the API log says why)",
        )
    if workers == 0:
        response.status_code = 503
        return Readiness(
            status="not_ready",
            redis=True,
            workers=0,
            detail="no live worker: uploads would queue but not be vetted",
        )
    return Readiness(
        status="ready", redis=True, workers=workers, detail=f"{workers} worker(s) alive"
    )


@router.get("/metrics", response_class=Response)
def read_metrics(state: StateDep) -> Response:
    """Prometheus metrics."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
