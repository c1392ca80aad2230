"""Regression test for what the reliability suite found in the worker: RQ's work loop quits when
Redis goes away mid-loop, so a Redis restart left the service with no worker (and queued jobs never
vetted). ``loravet worker`` now waits for Redis and serves again under the same name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from core.contracts import WEBHOOK_QUEUE
from harness.embedded_redis import EmbeddedRedis

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _registered(url: str) -> int:
    try:
        client = Redis.from_url(url, socket_connect_timeout=1)
        return sum(1 for w in Worker.all(connection=client) if w.name == "restart-test")
    except Exception:
        return 0


def test_worker_outlives_a_redis_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    env = {
        **os.environ,
        "LORAVET_WORKER_REDIS_URL": server.url,
        "LORAVET_WORKER_STORAGE_DIR": str(tmp_path / "store"),
        "LORAVET_WORKER_PREDICTOR_DIR": str(tmp_path / "none"),
        "LORAVET_WORKER_DEVICE": "cpu",
        "LORAVET_WORKER_MAINTENANCE_INTERVAL_S": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "loravet.cli", "worker", "--name", "restart-test"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _registered(server.url):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        server.stop()
        time.sleep(3)  # the worker's loop meets the outage (maintenance runs every second)
        server = EmbeddedRedis(server.data_dir, port=server.port).start()
        client = Redis.from_url(server.url)
        job = Queue(WEBHOOK_QUEUE, connection=client, serializer=JSONSerializer).enqueue_call(
            "os.getpid"
        )
        deadline = time.monotonic() + 40
        while job.get_status(refresh=True) != JobStatus.FINISHED:
            assert proc.poll() is None, "the worker exited when Redis restarted"
            assert time.monotonic() < deadline, "the worker did not serve again after the restart"
            time.sleep(0.3)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        server.stop()


def _worker(redis_url: str, tmp_path: Path, name: str):  # type: ignore[no-untyped-def]
    from harness.inprocess import worker_settings
    from workers.resident_worker import VettingWorker
    from workers.worker_runtime import WorkerRuntime

    settings = worker_settings(redis_url, tmp_path / "store", name=name)
    return VettingWorker(WorkerRuntime(settings, registry=None))


def test_a_restarted_worker_takes_the_place_of_its_dead_self(
    redis_url: str, tmp_path: Path
) -> None:
    """Found by the suite: a worker SIGKILLed and restarted under the same name (a container
    restart keeps host name and pid) exited with 'There exists an active worker named ...' until
    the dead one's registration expired."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    first = _worker(redis_url, tmp_path, "same-name")
    first.register_birth()
    first.connection.hset(first.key, "pid", str(dead.pid))  # as if that process had been killed
    second = _worker(redis_url, tmp_path, "same-name")
    second.register_birth()  # no ValueError: the stale registration is taken over
    assert second.connection.hget(second.key, "pid") == str(os.getpid()).encode()


def test_a_live_namesake_is_still_refused(redis_url: str, tmp_path: Path) -> None:
    first = _worker(redis_url, tmp_path, "twin")
    first.register_birth()
    first.connection.hset(first.key, "pid", str(os.getppid()))  # alive, and not us
    with pytest.raises(ValueError, match="active worker"):
        _worker(redis_url, tmp_path, "twin").register_birth()
