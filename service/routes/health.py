"""``/healthz``, ``/readyz``, ``/metrics`` (no API key: for orchestrators and scrapers) and ``/v1/predictors``."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis import Redis
from redis.exceptions import RedisError
from rq.worker_registration import REDIS_WORKER_KEYS

from core import redis_model
from service.dependencies import ApiKeyDep, StateDep
from service.schemas import PredictorsResponse, Readiness

router = APIRouter(tags=["operations"])


def live_worker_count(redis: Redis) -> int:
    """Workers whose registration has not expired (a dead worker's key expires with its heartbeat)."""
    count = 0
    for key in redis.smembers(REDIS_WORKER_KEYS):  # type: ignore[union-attr]
        if redis.exists(key) and not redis.hexists(key, "death"):
            count += 1
    return count


@router.get("/healthz")
def read_health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def read_readiness(state: StateDep, response: Response) -> Readiness:
    """Readiness: Redis answers and at least one worker is alive."""
    try:
        state.redis.ping()
        workers = live_worker_count(state.redis)
    except RedisError:
        response.status_code = 503
        return Readiness(status="not_ready", redis=False, workers=0, detail="Redis is unreachable")
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


@router.get("/v1/predictors", response_model=PredictorsResponse, tags=["predictors"])
def read_predictors(key: ApiKeyDep, state: StateDep) -> PredictorsResponse:
    """List the predictors the live workers loaded (base-model spec, task, validation metrics)."""
    workers, found = redis_model.live_predictors(state.redis)
    return PredictorsResponse(
        workers=workers, predictors=sorted(found, key=lambda p: (p.predictor_id, p.version))
    )
