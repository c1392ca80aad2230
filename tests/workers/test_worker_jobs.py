"""The resident worker against real Redis: batching, permanent and transient failures, crash recovery."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from core import redis_model
from core.content_store import LocalContentStore
from core.contracts import (
    VET_QUEUE,
    Report,
    event_id_for,
    report_id_for,
)
from core.durable_worker import DurableQueue
from harness.inprocess import api_settings, run_worker_burst, wait_for, worker_settings
from harness.lora_files import peft_adapter
from service.auth import ApiKey
from service.operations.jobs import job_view, submit_vetting
from service.operations.webhooks import create_subscription
from workers.resident_worker import VettingWorker
from workers.worker_runtime import WorkerRuntime

pytestmark = pytest.mark.redis

KEY = ApiKey(key_id="0123456789abcdef")


def submit(redis: Redis, store: LocalContentStore, data: bytes, **settings: object) -> str:
    """Store bytes as the API would (no validation here: the worker must cope) and enqueue."""
    sha = hashlib.sha256(data).hexdigest()
    store.put_bytes("adapters", sha, data)
    s = api_settings(redis_url_of(redis), store.root, **settings)
    return submit_vetting(
        redis, s, KEY, report_id=sha, sha256=sha, config_sha256=None, report_url=None
    ).job_id


def redis_url_of(redis: Redis) -> str:
    kw = redis.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/{kw.get('db', 0)}"


def status(redis: Redis, job_id: str) -> str:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer).get_status()


def test_jobs_are_batched_and_bad_input_fails_for_good(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url)
    store = LocalContentStore(tmp_path / "store")
    sub = create_subscription(
        redis,
        api_settings(redis_url, store.root, allow_private_webhooks=True),
        KEY,
        "http://127.0.0.1:9/hook",
        ["report.failed"],
    )
    good = [submit(redis, store, peft_adapter(seed)) for seed in range(3)]
    bad = submit(redis, store, b"\x80\x04 not a lora, a pickle")
    assert run_worker_burst(worker_settings(redis_url, store.root, batch_size=8))
    for job_id in good:
        view = job_view(redis, job_id)
        assert view is not None and view.status == "finished"
        report = Report.model_validate_json(store.get_bytes("reports", view.report_id))
        assert report.timings.batch_size == 4  # all four went through one pass
        assert report.verdict == "review"
    view = job_view(redis, bad)
    assert view is not None and view.status == "failed"
    assert view.failure_kind == "pickle_refused" and "pickle" in view.failure_reason
    job = Job.fetch(bad, connection=redis, serializer=JSONSerializer)
    assert len(job.results()) == 1  # bad input is not retried
    assert not store.exists("reports", view.report_id)
    # subscribers of the submitting key hear report.failed
    event_id = json.loads(redis_model.load_event(redis, _event_id(bad, "report.failed")) or b"{}")[
        "id"
    ]
    assert event_id.startswith("evt_")
    # the burst worker also served the webhook queue: the API allowed the loopback URL, the worker
    # (private callbacks not allowed) refused to connect, and logged it
    (entry,) = redis_model.deliveries(redis, sub.id, 100)
    assert entry.event_id == event_id and entry.event_type == "report.failed"
    assert entry.outcome == "refused" and "loopback" in entry.detail
    assert redis_model.active_job_count(redis, KEY.key_id) == 0  # quota slots freed


def _event_id(job_id: str, event_type: str) -> str:
    return event_id_for(job_id, event_type)


def test_transient_faults_are_retried(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = Redis.from_url(redis_url)
    store = LocalContentStore(tmp_path / "store")
    job_id = submit(redis, store, peft_adapter(11), vet_retries=2, vet_retry_intervals=[0])
    calls = {"n": 0}
    original = WorkerRuntime.vet

    def flaky(self: WorkerRuntime, args: list) -> list:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("store briefly unavailable")
        return original(self, args)

    monkeypatch.setattr(WorkerRuntime, "vet", flaky)
    run_worker_burst(worker_settings(redis_url, store.root))
    assert calls["n"] == 2
    assert status(redis, job_id) == JobStatus.FINISHED
    assert store.exists(
        "reports",
        report_id_for(
            Job.fetch(job_id, connection=redis, serializer=JSONSerializer).meta["sha256"], None
        ),
    )


def _worker_process(
    redis_url: str, store: Path, name: str, *, slow: bool
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LORAVET_WORKER_REDIS_URL": redis_url,
        "LORAVET_WORKER_STORAGE_DIR": str(store),
        "LORAVET_WORKER_PREDICTOR_DIR": str(store / "no-predictors"),
        "LORAVET_WORKER_EXECUTION_TTL_S": "3",
        "LORAVET_WORKER_MAINTENANCE_INTERVAL_S": "1",
        "LORAVET_WORKER_WITH_SCHEDULER": "false",
        "LORAVET_WORKER_LOG_LEVEL": "WARNING",
        "SLOW_VET_S": "120",
    }
    module = "tests.workers.slow_worker" if slow else "loravet.cli"
    argv = [sys.executable, "-m", module, *([] if slow else ["worker"]), "--name", name]
    # own session, so the kill reaches the worker and anything it forked, and nothing else
    return subprocess.Popen(
        argv, env=env, start_new_session=True, cwd=Path(__file__).resolve().parents[2]
    )


@pytest.mark.parametrize("dies_while_cleaning", [False, True])
def test_job_of_a_killed_worker_is_completed_by_another(
    redis_url: str, tmp_path: Path, dies_while_cleaning: bool
) -> None:
    """``dies_while_cleaning``: the doomed worker also held the registry-cleaning lock when it was
    killed (a crash-looping worker cleans first thing); RQ's own lock would stall every worker's
    recovery of abandoned jobs for 15 minutes, ours expires after twice the maintenance interval."""
    redis = Redis.from_url(redis_url)
    store = LocalContentStore(tmp_path / "store")
    job_id = submit(redis, store, peft_adapter(21), vet_retries=2, vet_retry_intervals=[0])
    doomed = _worker_process(redis_url, store.root, "doomed-worker", slow=True)
    survivor = None
    try:
        wait_for(lambda: status(redis, job_id) == JobStatus.STARTED, timeout_s=30)
        assert (
            Job.fetch(job_id, connection=redis, serializer=JSONSerializer).worker_name
            == "doomed-worker"
        )
        survivor = _worker_process(redis_url, store.root, "survivor-worker", slow=False)
        if dies_while_cleaning:
            queue = DurableQueue(VET_QUEUE, connection=redis, serializer=JSONSerializer)
            queue.maintenance_lock_ttl_s = 5  # what a worker with a 1 s interval takes
            redis.delete(queue.registry_cleaning_key)
            assert queue.acquire_maintenance_lock()
            assert 0 < redis.ttl(queue.registry_cleaning_key) <= 5
        os.killpg(doomed.pid, signal.SIGKILL)  # mid-job, no chance to clean up
        doomed.wait(10)
        wait_for(lambda: status(redis, job_id) == JobStatus.FINISHED, timeout_s=40, interval_s=0.25)
        job = Job.fetch(job_id, connection=redis, serializer=JSONSerializer)
        assert job.latest_result().worker_name == "survivor-worker"
        assert store.exists("reports", job.meta["report_id"])
    finally:
        for proc in (doomed, survivor):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def test_workers_take_the_cleaning_lock_briefly(redis_url: str, tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url)
    settings = worker_settings(redis_url, tmp_path / "store")
    worker = VettingWorker(WorkerRuntime(settings, registry=None))
    for queue in worker.queues:
        redis.delete(queue.registry_cleaning_key)
        assert queue.acquire_maintenance_lock()
        assert (
            0
            < redis.ttl(queue.registry_cleaning_key)
            <= max(5, 2 * settings.maintenance_interval_s)
        )
        assert not queue.acquire_maintenance_lock()  # still one cleaner at a time
        queue.release_maintenance_lock()
