"""Pieces of a real running stack for integration tests: API on a loopback port, burst workers,
a webhook receiver, and generated LoRA files. Nothing here is a mock: Redis, uvicorn, RQ and HTTP
are the real ones; only the scale is small.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from service.embedded_redis import free_port
from service.main import create_app
from service.settings import ApiSettings
from tests.lora_files import safetensors_bytes
from workers.settings import WorkerSettings

API_KEY = "k3y-for-tests-0123456789abcdef-one"
OTHER_KEY = "k3y-for-tests-0123456789abcdef-two"
AUTH = {"X-API-Key": API_KEY}


def peft_adapter(
    seed: int = 0, *, layers: int = 2, hidden: int = 32, rank: int = 4, zero_b: bool = False
) -> bytes:
    """A PEFT LoRA on a small BERT-style encoder (query/value of each layer), as PEFT names it."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for i in range(layers):
        for proj in ("query", "value"):
            base = f"base_model.model.encoder.layer.{i}.attention.self.{proj}"
            tensors[f"{base}.lora_A.weight"] = rng.normal(size=(rank, hidden)).astype(np.float32)
            b = (
                np.zeros((hidden, rank), np.float32)
                if zero_b
                else rng.normal(size=(hidden, rank)).astype(np.float32) * 0.1
            )
            tensors[f"{base}.lora_B.weight"] = b
    return safetensors_bytes(tensors)


def adapter_config(rank: int = 4, alpha: float = 8.0) -> bytes:
    return json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": ["query", "value"]}
    ).encode()


def api_settings(redis_url: str, store: Path, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "storage_dir": store,
        "keys": [API_KEY, OTHER_KEY],
        "key_hashes": [],
        "vet_retry_intervals": [0],
        "public_url": None,
    }
    values.update(overrides)
    return ApiSettings(**values)


def worker_settings(redis_url: str, store: Path, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "storage_dir": store,
        "predictor_dir": store / "no-predictors",
        "device": "cpu",
        "execution_ttl_s": 3,
        "maintenance_interval_s": 1,
        "webhook_retry_schedule": [1],
        "webhook_jitter": 0.0,
        "webhook_timeout_s": 3.0,
    }
    values.update(overrides)
    return WorkerSettings(**values)


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
    headers = {"X-API-Key": key}
    if raw:
        return httpx.post(
            f"{base}/v1/adapters",
            content=data,
            headers={**headers, "content-type": "application/octet-stream"},
            timeout=30,
        )
    files: dict[str, Any] = {
        "file": ("adapter_model.safetensors", data, "application/octet-stream")
    }
    if config is not None:
        files["config"] = ("adapter_config.json", config, "application/json")
    return httpx.post(f"{base}/v1/adapters", files=files, headers=headers, timeout=30)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # arrival (wall clock), for recovery times


@dataclass
class WebhookReceiver:
    """A real HTTP server on loopback that records what it receives and answers ``status``; it can be
    stopped and started again on the same port (a receiver outage), keeping what it received."""

    port: int = field(default_factory=free_port)
    status: int = 204
    extra_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/loravet"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                self.send_response(receiver.status)
                for k, v in receiver.extra_headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
