"""Nothing is lost when Redis restarts: reports live in the store, jobs in Redis' append-only file."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from harness.embedded_redis import EmbeddedRedis
from harness.inprocess import api_settings, run_worker_burst, running_api, upload, worker_settings
from harness.lora_files import peft_adapter
from harness.profile import AUTH

pytestmark = pytest.mark.redis


def restart(server: EmbeddedRedis, *, hard: bool) -> EmbeddedRedis:
    if hard:
        time.sleep(
            1.2
        )  # appendfsync everysec: give the last writes their fsync, then pull the plug
        server.kill()
    else:
        server.stop()
    return EmbeddedRedis(server.data_dir, port=server.port).start()


def test_reports_and_queued_jobs_survive_redis_restarts(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    store = tmp_path / "store"
    try:
        with running_api(api_settings(server.url, store)) as base:
            first = upload(base, peft_adapter(41)).json()
            run_worker_burst(worker_settings(server.url, store))
            second = upload(base, peft_adapter(42)).json()  # still queued when Redis goes down

            server = restart(server, hard=False)
            assert httpx.get(first["report_url"], headers=AUTH).status_code == 200
            assert httpx.get(first["status_url"], headers=AUTH).json()["status"] == "finished"
            again = upload(base, peft_adapter(41))
            assert again.status_code == 200 and again.json()["job_id"] == first["job_id"]

            server = restart(server, hard=True)  # SIGKILL: only the AOF is left
            assert httpx.get(second["status_url"], headers=AUTH).json()["status"] == "queued"
            run_worker_burst(worker_settings(server.url, store))
            assert httpx.get(second["status_url"], headers=AUTH).json()["status"] == "finished"
            assert (
                httpx.get(second["report_url"], headers=AUTH).json()["sha256"] == second["sha256"]
            )
    finally:
        server.stop()
