"""What the live workers loaded: each worker publishes its predictors under a key that expires with
its heartbeat, so a dead worker's predictors drop out on their own."""

from __future__ import annotations

from typing import cast

from redis import Redis
from rq.worker_registration import REDIS_WORKER_KEYS

from core import redis_model
from core.contracts import PredictorInfo


def live_predictors(redis: Redis) -> tuple[int, list[PredictorInfo]]:
    """(workers that published, their predictors by id and version, each once)."""
    workers, found = redis_model.live_predictors(redis)
    return workers, sorted(found, key=lambda p: (p.predictor_id, p.version))


def live_worker_count(redis: Redis) -> int:
    """Workers whose registration has not expired (a dead worker's key expires with its heartbeat)."""
    count = 0
    for key in cast(set[bytes], redis.smembers(REDIS_WORKER_KEYS)):
        if redis.exists(key) and not redis.hexists(key, "death"):
            count += 1
    return count
