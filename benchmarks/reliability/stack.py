"""The real stack on loopback, as separate processes: embedded Redis, the API under uvicorn
(``loravet api``) and resident workers (``loravet worker``), with their logs captured to files.

Nothing is mocked. The harness keeps the process handles so a part can SIGKILL a worker, stop or
restart Redis on the same port and data directory, read each process's RSS, and count processes
that exited when nobody killed them (crashes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from service.embedded_redis import EmbeddedRedis, free_port

REPO = Path(__file__).resolve().parents[2]

KEYS = (
    "rel-key-0-8c1f2e9d7a6b5c4d3e2f1a0b",
    "rel-key-1-4f5e6d7c8b9a0f1e2d3c4b5a",
    "rel-key-2-0a1b2c3d4e5f6a7b8c9d0e1f",
    "rel-key-3-9e8d7c6b5a4f3e2d1c0b9a8f",
    "rel-key-4-1b3d5f7a9c2e4a6c8e0a2c4e",
)
"""API keys of the test stacks (plaintext: the security part greps the logs for them)."""


@dataclass
class StackConfig:
    workers: int = 1
    api_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    """Set in every child (e.g. the test resolver override)."""


def _base_api_env() -> dict[str, str]:
    return {
        "LORAVET_API_KEYS": ",".join(KEYS),
        "LORAVET_API_RATE_LIMIT_PER_MINUTE": "1000000",
        "LORAVET_API_MAX_ACTIVE_JOBS_PER_KEY": "1000",
        "LORAVET_API_MAX_QUEUE_DEPTH": "100000",
        "LORAVET_API_VET_RETRIES": "5",
        "LORAVET_API_VET_RETRY_INTERVALS": "1",
        "LORAVET_API_LOG_LEVEL": "INFO",
    }


def _base_worker_env() -> dict[str, str]:
    return {
        "LORAVET_WORKER_DEVICE": "cpu",
        "LORAVET_WORKER_EXECUTION_TTL_S": "5",
        "LORAVET_WORKER_MAINTENANCE_INTERVAL_S": "1",
        "LORAVET_WORKER_WEBHOOK_RETRY_SCHEDULE": "1,1,2,2,3,3,5,5,5,5,5,5",
        "LORAVET_WORKER_WEBHOOK_JITTER": "0",
        "LORAVET_WORKER_WEBHOOK_TIMEOUT_S": "3",
        "LORAVET_WORKER_LOG_LEVEL": "INFO",
    }


class LiveStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, root: Path, config: StackConfig | None = None) -> None:
        self.root = Path(root).resolve()
        self.config = config or StackConfig()
        self.store = self.root / "store"
        self.logs = self.root / "logs"
        self.redis = EmbeddedRedis(self.root / "redis")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.killed: set[int] = set()
        """pids this harness killed on purpose (not crashes)."""
        self.exits: list[dict[str, Any]] = []
        self._log_seq = 0
        self._env: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LiveStack:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAVET_")}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        env.update(
            {
                "LORAVET_API_REDIS_URL": self.redis.url,
                "LORAVET_API_STORAGE_DIR": str(self.store),
                "LORAVET_WORKER_REDIS_URL": self.redis.url,
                "LORAVET_WORKER_STORAGE_DIR": str(self.store),
                "LORAVET_WORKER_PREDICTOR_DIR": str(self.root / "no-predictors"),
                **_base_api_env(),
                **_base_worker_env(),
                **self.config.api_env,
                **self.config.worker_env,
                **self.config.extra_env,
            }
        )
        self._env = env
        for i in range(self.config.workers):
            self.workers.append(None)
            self.start_worker(i)
        self.api = self._spawn("api", ["api", "--host", "127.0.0.1", "--port", str(self.port)])
        deadline = time.monotonic() + 60
        while True:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited at start; see {self.logs}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack was not ready within 60 s; see {self.logs}")
            time.sleep(0.2)
        return self

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        self._log_seq += 1
        log = (self.logs / f"{name}-{self._log_seq:03d}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "loravet.cli", *args],
            env=self._env,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return proc

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        """Start worker ``index``; a restart keeps its name, as a container restart does."""
        proc = self._spawn(f"worker{index}", ["worker", "--name", f"rel-w{index}"])
        self.workers[index] = proc
        return proc

    def wait_workers_registered(self, count: int | None = None, timeout_s: float = 60) -> None:
        want = len(self.workers) if count is None else count
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                body = httpx.get(f"{self.url}/readyz", timeout=2).json()
                if body.get("workers", 0) >= want:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"fewer than {want} workers registered within {timeout_s} s")

    def kill_worker(self, index: int, sig: int = signal.SIGKILL) -> int:
        proc = self.workers[index]
        assert proc is not None
        self.killed.add(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        proc.wait(30)
        return proc.pid

    def pause_workers(self) -> None:
        for p in self.workers:
            if p is not None:
                os.kill(p.pid, signal.SIGSTOP)

    def resume_workers(self) -> None:
        for p in self.workers:
            if p is not None:
                os.kill(p.pid, signal.SIGCONT)

    def crashed(self) -> list[dict[str, Any]]:
        """Processes (API, workers) that exited without this harness killing them."""
        out = []
        for name, proc in [("api", self.api)] + [
            (f"worker{i}", p) for i, p in enumerate(self.workers)
        ]:
            if proc is not None and proc.poll() is not None and proc.pid not in self.killed:
                out.append({"process": name, "pid": proc.pid, "returncode": proc.returncode})
        return out

    def restart_redis(self, *, hard: bool, down_s: float = 0.0) -> float:
        """Stop Redis (SIGTERM, or SIGKILL after the AOF's 1 s fsync window), keep it down for
        ``down_s`` and start it again on the same port and data; returns the seconds it was down."""
        if hard:
            time.sleep(1.2)
        t0 = time.monotonic()
        if hard:
            self.redis.kill()
        else:
            self.redis.stop()
        time.sleep(down_s)
        self.redis = EmbeddedRedis(self.redis.data_dir, port=self.redis.port).start()
        return time.monotonic() - t0

    def stop(self) -> None:
        procs = [self.api, *self.workers]
        for p in procs:
            if p is not None and p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGCONT)
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            if p is None:
                continue
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.redis.stop()

    def __enter__(self) -> LiveStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- observation --------------------------------------------------------------------------
    def rss(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {"api": _rss(self.api)}
        for i, p in enumerate(self.workers):
            out[f"worker{i}"] = _rss(p)
        return out

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))

    def headers(self, key_index: int = 0) -> dict[str, str]:
        return {"X-API-Key": KEYS[key_index]}


def _rss(proc: subprocess.Popen[bytes] | None) -> int | None:
    if proc is None or proc.poll() is not None:
        return None
    try:
        return int(psutil.Process(proc.pid).memory_info().rss)
    except psutil.Error:
        return None


class RssSampler:
    """Samples the stack's RSS every ``interval_s`` in a thread; keeps the peak per process."""

    def __init__(self, stack: LiveStack, interval_s: float = 0.25) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name, value in self.stack.rss().items():
                if value is not None:
                    self.peak[name] = max(self.peak.get(name, 0), value)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
