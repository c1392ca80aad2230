"""The stack inside the test process: the API under uvicorn in a thread on a loopback port, RQ
burst workers run in this process, and the fast settings profile the tests use. Nothing here is a
mock: Redis, uvicorn, RQ and HTTP are the real ones; only the scale is small. (The stack as separate
processes is ``harness.stack``.)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from harness.client import upload as client_upload
from harness.embedded_redis import free_port
from harness.profile import API_KEY, FAST_API, FAST_WORKER
from service.main import create_app
from service.settings import ApiSettings
from workers.settings import WorkerSettings


def api_settings(redis_url: str, store: Path, **overrides: Any) -> ApiSettings:
    """The profile's API settings (``harness.profile.FAST_API``) on this Redis and store."""
    return ApiSettings(**{**FAST_API, "redis_url": redis_url, "storage_dir": store, **overrides})


def worker_settings(redis_url: str, store: Path, **overrides: Any) -> WorkerSettings:
    """The profile's worker settings (``harness.profile.FAST_WORKER``) on this Redis and store."""
    values = {**FAST_WORKER, "redis_url": redis_url, "storage_dir": store}
    return WorkerSettings(**{**values, "predictor_dir": store / "no-predictors", **overrides})


@contextlib.contextmanager
def running_api(settings: ApiSettings) -> Iterator[str]:
    """The real app under uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_worker_burst(
    settings: WorkerSettings, *, with_scheduler: bool = False, name: str | None = None
) -> bool:
    """Run a real ``VettingWorker`` in this process until the queues are empty (RQ burst mode)."""
    from workers.resident_worker import VettingWorker
    from workers.worker_runtime import WorkerRuntime, load_registry, set_runtime

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    registry, device = load_registry(settings.predictor_dir, settings.device)
    if name is not None:
        settings = settings.model_copy(update={"name": name})
    runtime = WorkerRuntime(settings, registry=registry, device=device)
    set_runtime(runtime)
    try:
        return VettingWorker(runtime).work(
            burst=True, with_scheduler=with_scheduler, logging_level="WARNING"
        )
    finally:
        set_runtime(None)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def wait_for(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def upload(
    base: str, data: bytes, *, config: bytes | None = None, key: str = API_KEY, raw: bool = False
) -> httpx.Response:
    """One upload with a fresh connection (``harness.client.upload`` does the work)."""
    with httpx.Client() as client:
        return client_upload(client, base, key, data, config, raw=raw, timeout=30)
