"""The real stack as separate processes: embedded Redis, the API under uvicorn (``loravet api``)
and resident workers (``loravet worker``).

One launcher for ``loravet serve`` (production settings, the operator's environment, logs on the
terminal), the reliability suite and the browser tests (the ``FAST`` profile: loopback, known keys,
short timeouts, logs captured to files). Nothing is mocked. The handles are kept so a caller can
SIGKILL a worker, stop or restart Redis on the same port and data directory, read each process's
RSS, and count processes that exited when nobody killed them (crashes).
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

from harness.embedded_redis import EmbeddedRedis, free_port
from harness.profile import FAST_API, FAST_WORKER, KEYS, settings_env

REPO = Path(__file__).resolve().parents[2]


def started_jobs(redis: Any, queue: str, worker_name: str) -> list[str]:
    """Ids of the jobs of ``queue`` that worker ``worker_name`` runs now: RQ's started registry,
    then each job's ``worker_name``. A job that finishes between the two reads is left out."""
    from rq import Queue
    from rq.exceptions import NoSuchJobError
    from rq.job import Job
    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    q = Queue(queue, connection=redis, serializer=JSONSerializer)
    out = []
    for job_id in StartedJobRegistry(queue=q).get_job_ids(cleanup=False):
        try:
            job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        except NoSuchJobError:
            continue
        if job.worker_name == worker_name:
            out.append(job_id)
    return out


@dataclass
class StackConfig:
    workers: int = 1
    api_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    """Set in every child (e.g. the test resolver override)."""
    fast: bool = True
    """The test profile (``harness.profile``; the environment's own ``LORAVET_*`` settings
    dropped); ``False`` for ``loravet serve``: the operator's settings."""
    host: str = "127.0.0.1"
    port: int | None = None
    """API port; ``None`` picks a free one."""
    predictors: Path | None = None
    """Predictor directory of the workers; ``None``: none (every verdict ``review``)."""
    capture_logs: bool = True
    """Each process's output to ``<root>/logs/<name>-NNN.log``; ``False``: this terminal."""
    ready_path: str = "/readyz"
    """What :meth:`ProcessStack.start` waits for: ``/readyz`` (Redis and a worker) or ``/healthz``."""
    startup_timeout_s: float = 60.0
    separate_hosts: bool = False
    """Play several machines on one: each process runs in a directory of its own
    (``<root>/hosts/<name>``: its working directory and its ``STORAGE_DIR``) and shares only Redis
    and what ``api_env`` / ``worker_env`` name, an S3-compatible store above all."""


class ProcessStack:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, root: Path, config: StackConfig | None = None) -> None:
        self.root = Path(root).resolve()
        self.config = config or StackConfig()
        self.store = self.root / "store"
        self.logs = self.root / "logs"
        self.redis = EmbeddedRedis(self.root / "redis")
        self.port = self.config.port or free_port()
        shown = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        self.url = f"http://{shown}:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes] | None] = []
        self.killed: set[int] = set()
        """pids this harness killed on purpose (not crashes)."""
        self.exits: list[dict[str, Any]] = []
        self._log_seq = 0
        self._env: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> ProcessStack:
        """Redis, the workers, then the API; returns once ``ready_path`` answers 200.

        Raises ``RedisServerNotFoundError`` (no server binary) or ``RuntimeError`` (a process
        exited or the stack was not ready in time), having stopped what it started."""
        cfg = self.config
        if cfg.capture_logs:
            self.logs.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        env = dict(os.environ)
        if cfg.fast:
            env = {k: v for k, v in env.items() if not k.startswith("LORAVET_")}
            env.update(settings_env("LORAVET_API_", FAST_API))
            env.update(settings_env("LORAVET_WORKER_", FAST_WORKER))
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
        )
        predictors = cfg.predictors or self.root / "no-predictors"
        shared_store = (
            {}
            if cfg.separate_hosts
            else {
                "LORAVET_API_STORAGE_DIR": str(self.store),
                "LORAVET_WORKER_STORAGE_DIR": str(self.store),
            }
        )
        env.update(
            {
                "LORAVET_API_REDIS_URL": self.redis.url,
                "LORAVET_WORKER_REDIS_URL": self.redis.url,
                **shared_store,
                "LORAVET_WORKER_PREDICTOR_DIR": str(Path(predictors).resolve()),
                **cfg.api_env,
                **cfg.worker_env,
                **cfg.extra_env,
            }
        )
        self._env = env
        try:
            for i in range(cfg.workers):
                self.workers.append(None)
                self.start_worker(i)
            self.api = self._spawn("api", ["api", "--host", cfg.host, "--port", str(self.port)])
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        where = f"; see {self.logs}" if self.config.capture_logs else ""
        deadline = time.monotonic() + self.config.startup_timeout_s
        assert self.api is not None
        while True:
            if self.api.poll() is not None:
                raise RuntimeError(f"the API exited at start (status {self.api.returncode}){where}")
            with contextlib.suppress(httpx.HTTPError):
                r = httpx.get(f"{self.url}{self.config.ready_path}", timeout=2)
                if r.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the stack did not answer {self.config.ready_path} on {self.url} within "
                    f"{self.config.startup_timeout_s:g} s{where}"
                )
            time.sleep(0.2)

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """A child in its own session (a Ctrl-C meant for ``loravet serve`` reaches only it)."""
        argv = [sys.executable, "-m", "loravet.cli", *args]
        env = {**self._env, **(env or {})}
        cwd = self.root
        if self.config.separate_hosts:
            cwd = self.host_dir(name)
            cwd.mkdir(parents=True, exist_ok=True)
            role = "API" if name == "api" else "WORKER"
            env[f"LORAVET_{role}_STORAGE_DIR"] = str(cwd / "store")
        if not self.config.capture_logs:
            return subprocess.Popen(argv, env=env, cwd=cwd, start_new_session=True)
        self._log_seq += 1
        log = (self.logs / f"{name}-{self._log_seq:03d}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return proc

    def host_dir(self, name: str) -> Path:
        """The directory of process ``name`` (``api``, ``worker0``, ...) with ``separate_hosts``."""
        return self.root / "hosts" / name

    def start_worker(self, index: int, predictors: Path | None = None) -> subprocess.Popen[bytes]:
        """Start worker ``index`` (with other ``predictors`` than the stack's, if given); a restart
        keeps its name, as a container restart does."""
        while len(self.workers) <= index:
            self.workers.append(None)
        old = self.workers[index]
        if old is not None and old.poll() is not None:
            # what a dead worker leaves behind in its session: RQ's scheduler process outlives a
            # SIGKILLed worker, and would run on as an orphan (it ends in a traceback once Redis
            # stops)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(old.pid, signal.SIGKILL)
        name = ["--name", f"rel-w{index}"] if self.config.fast else []
        env = {"LORAVET_WORKER_PREDICTOR_DIR": str(predictors.resolve())} if predictors else None
        proc = self._spawn(f"worker{index}", ["worker", *name], env)
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

    def jobs_running_on(self, redis: Any, index: int) -> list[str]:
        """Ids of the vetting jobs worker ``index`` runs now (the test profile names workers
        ``rel-w<index>``)."""
        from core.contracts import VET_QUEUE

        return started_jobs(redis, VET_QUEUE, f"rel-w{index}")

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

    def exited(self, *, include_workers: bool = True) -> str | None:
        """The first of API, workers (unless ``include_workers`` is False: a supervisor restarts
        those) and Redis that is no longer running, said in words; None if all run."""
        workers = [(f"worker{i}", p) for i, p in enumerate(self.workers)] if include_workers else []
        for name, proc in [("api", self.api), *workers]:
            if proc is not None and proc.poll() is not None and proc.pid not in self.killed:
                return f"{name} exited with status {proc.returncode}"
        if self.redis.process is not None and self.redis.process.poll() is not None:
            return f"redis exited with status {self.redis.process.returncode}"
        return None

    def stop(self) -> None:
        """API and workers (SIGTERM: a warm shutdown, SIGKILL after 20 s), then Redis (flushing
        its AOF)."""
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

    def __enter__(self) -> ProcessStack:
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

    def __init__(self, stack: ProcessStack, interval_s: float = 0.25) -> None:
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
