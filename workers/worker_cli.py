"""``loravet worker``: one resident vetting worker (one per CPU slot or per GPU).

    loravet worker                                   # settings from LORAVET_WORKER_* / .env
    loravet worker --redis-url redis://redis:6379/0 --predictors /predictors --batch-size 32
    CUDA_VISIBLE_DEVICES=1 loravet worker --device cuda   # one process per GPU

It waits for Redis, loads the predictors once, publishes what it loaded (``GET /v1/predictors``)
and serves the vetting and webhook queues until SIGINT/SIGTERM (warm shutdown: the current batch
finishes first; a second signal stops at once).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from redis import Redis
from redis.exceptions import RedisError

from core.cli_support import Parser, settings_error
from workers.settings import WorkerSettings

log = logging.getLogger("loravet.worker")


def build_parser() -> Parser:
    p = Parser(prog="loravet worker", description="Run one resident vetting worker.")
    p.add_argument("--redis-url", help="Redis URL (LORAVET_WORKER_REDIS_URL)")
    p.add_argument(
        "--storage",
        type=Path,
        help="content store directory shared with the API (LORAVET_WORKER_STORAGE_DIR)",
    )
    p.add_argument(
        "--predictors", type=Path, help="predictor directory (LORAVET_WORKER_PREDICTOR_DIR)"
    )
    p.add_argument(
        "--predictor-set",
        metavar="SHA256",
        help="instead of --predictors: a set published to the content store by `loravet "
        "predictors publish` (LORAVET_WORKER_PREDICTOR_SET)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="where predictors run (LORAVET_WORKER_DEVICE)",
    )
    p.add_argument(
        "--batch-size", type=int, help="most jobs per forward pass (LORAVET_WORKER_BATCH_SIZE)"
    )
    p.add_argument(
        "--queues", help="comma-separated queues, highest priority first (LORAVET_WORKER_QUEUES)"
    )
    p.add_argument("--name", help="worker name in Redis (default host.pid)")
    p.add_argument(
        "--burst", action="store_true", help="quit when the queues are empty (batch runs, tests)"
    )
    p.add_argument(
        "--wait-for-redis",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to wait for Redis at start",
    )
    return p


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    overrides = {
        "redis_url": args.redis_url,
        "storage_dir": args.storage,
        "predictor_dir": args.predictors,
        "predictor_set": args.predictor_set,
        "device": args.device,
        "batch_size": args.batch_size,
        "queues": args.queues,
        "name": args.name,
    }
    return WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})


def wait_for_redis(redis: Redis, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return bool(redis.ping())
        except RedisError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(
            f"error: invalid worker settings: {settings_error(exc, 'LORAVET_WORKER_')}",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    limit_native_threads()
    from core.content_store import StoreUnavailableError
    from core.predictor_sets import PredictorSetError
    from workers.resident_worker import VettingWorker
    from workers.worker_runtime import (
        DeviceUnavailableError,
        WorkerRuntime,
        load_registry,
        predictor_directory,
        set_runtime,
    )

    redis = Redis.from_url(settings.redis_url)
    if not wait_for_redis(redis, args.wait_for_redis):
        print(
            f"error: Redis at {_safe_url(settings.redis_url)} did not answer within {args.wait_for_redis:g} s",
            file=sys.stderr,
        )
        return 1
    try:
        registry, device = load_registry(predictor_directory(settings), settings.device)
    except (DeviceUnavailableError, PredictorSetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailableError as exc:
        print(f"error: cannot fetch the predictor set: {exc}", file=sys.stderr)
        return 1
    runtime = WorkerRuntime(settings, redis=redis, registry=registry, device=device)
    set_runtime(runtime)
    while True:
        worker = VettingWorker(runtime)
        log.info(
            "worker %s on %s, queues %s, batch size %d",
            worker.name,
            device,
            ",".join(settings.queues),
            settings.batch_size,
        )
        try:
            worker.work(
                burst=args.burst,
                with_scheduler=settings.with_scheduler,
                logging_level=settings.log_level,
            )
        except RedisError as exc:  # RQ's teardown talks to Redis too
            log.warning("worker %s: Redis failed while the worker stopped: %s", worker.name, exc)
        if args.burst or _stop_requested(worker):
            return 0
        # RQ's work loop quits when Redis goes away (a restart, a failover); a resident worker
        # waits for it and serves again under the same name instead of exiting
        log.warning(
            "worker %s lost its Redis connection; serving again once Redis answers", worker.name
        )
        if not _wait_for_redis_or_signal(redis):
            return 0
        with contextlib.suppress(RedisError):
            worker.register_death()  # its registration may have survived the restart (AOF)


def _stop_requested(worker: object) -> bool:
    """Whether the worker's loop ended on SIGINT/SIGTERM (RQ records the time of the request)."""
    return bool(
        getattr(worker, "_stop_requested", False)
        or getattr(worker, "_shutdown_requested_date", None) is not None
    )


def _wait_for_redis_or_signal(redis: Redis) -> bool:
    """Wait for Redis with our own SIGINT/SIGTERM handlers; False when a stop was requested."""
    stop = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda signum, frame: stop.append(signum))
    try:
        while not stop:
            if wait_for_redis(redis, 1.0):
                return True
        return False
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


NATIVE_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_native_threads() -> None:
    """One BLAS/OpenMP thread per worker process unless the operator set these variables.

    Workers run one per CPU slot; a BLAS pool of its own in each of them oversubscribes the cores
    (the static checks' Gram products ran 3-10x slower with two workers on two busy cores). Must run
    before numpy (or torch) is imported, which is why it is here and not in the worker code.
    """
    for name in NATIVE_THREAD_VARIABLES:
        os.environ.setdefault(name, "1")


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for messages."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
