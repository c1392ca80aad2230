"""Part 4: faults while jobs flow. Figures: jobs lost, events lost, recovery times.

* worker SIGKILL at random moments (two workers, the killed one restarted at once as a process
  supervisor would): every accepted job must end ``finished``; the recovery time of a kill is from
  the kill to the end of the last job that was running on the killed worker;
* Redis restarted with jobs queued (alternately SIGTERM, and SIGKILL after the AOF's 1 s fsync
  window): every job accepted before the restart must end ``finished``; API answers during the
  outage are counted (503 with Retry-After is the designed answer; 500 would be a bug);
* the webhook receiver (a real HTTP server on loopback, allowed with
  ``LORAVET_*_ALLOW_PRIVATE_WEBHOOKS``) down for a window, then back: every ``report.completed``
  event must arrive (deduplicated by ``webhook-id``, signatures verified); recovery is from the
  receiver's return to the last event in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from benchmarks.reliability.part_load import SizeClass, _kohya_sd15, _stamp_offset, stamped
from benchmarks.reliability.suite_stack import suite_config
from harness.client import percentile, status_counts, upload, wait_job
from harness.lora_files import peft_adapter
from harness.profile import KEYS
from harness.stack import ProcessStack
from harness.webhook_receiver import WebhookReceiver


def size_classes() -> list[SizeClass]:
    small = peft_adapter(21, layers=4, hidden=64, rank=8)
    mid = _kohya_sd15(32, 32)
    return [SizeClass("peft-small", 0.5, small, *_stamp_offset(small)),
            SizeClass("sd15-kohya-r32", 0.5, mid, *_stamp_offset(mid))]  # fmt: skip


class Producer:
    """Uploads distinct adapters from ``threads`` threads until stopped; keeps every accepted job
    id, and every answer in order (``statuses``: codes, or ``error:<type>`` with no answer)."""

    def __init__(
        self,
        url: str,
        classes: list[SizeClass],
        threads: int = 3,
        start: int = 0,
        key: str = KEYS[0],
        pause_s: float = 0.05,
    ) -> None:
        self.url, self.key, self.classes, self.threads = url, key, classes, threads
        self.pause_s = pause_s
        """Sleep after each accepted upload, per thread."""
        self.accepted: list[str] = []
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._n = start
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                with self._lock:
                    self._n += 1
                    n = self._n
                data = stamped(self.classes[n % len(self.classes)], n)
                while not self._stop.is_set():
                    try:
                        r = upload(client, self.url, self.key, data, raw=True, timeout=60)
                    except httpx.HTTPError as exc:
                        self.statuses.append(f"error:{type(exc).__name__}")
                        time.sleep(0.5)
                        continue
                    self.statuses.append(r.status_code)
                    if r.status_code in (200, 202):
                        with self._lock:
                            self.accepted.append(r.json()["job_id"])
                        break
                    if r.status_code in (429, 503):
                        time.sleep(float(r.headers.get("retry-after", "1")) / 5)
                        continue
                    break
                time.sleep(self.pause_s)

    def start(self) -> Producer:
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(120)


def final_statuses(
    url: str, job_ids: list[str], timeout_s: float, key: str = KEYS[0]
) -> dict[str, dict[str, Any]]:
    """Each job's last status, waiting up to ``timeout_s`` in all for them to end."""
    out = {}
    deadline = time.monotonic() + timeout_s
    with httpx.Client() as client:
        for j in job_ids:
            left = max(5.0, deadline - time.monotonic())
            out[j] = wait_job(client, url, key, j, timeout_s=left, poll_s=0.2)
    return out


def epoch(ts: str | None) -> float | None:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if ts else None


def worker_kills(
    root: Path, kills: int, retry_interval_s: int = 0, seed: int = 3
) -> dict[str, Any]:
    """``retry_interval_s`` is the vetting jobs' retry interval (``LORAVET_API_VET_RETRY_INTERVALS``):
    0 requeues a dead worker's jobs at once; any other value goes through RQ's scheduler, whose lock
    a killed worker may hold for its 61 s TTL."""
    rnd = random.Random(seed)
    cfg = suite_config(
        workers=2, api_env={"LORAVET_API_VET_RETRY_INTERVALS": str(retry_interval_s)}
    )
    with ProcessStack(root / "kills", cfg) as stack:
        stack.wait_workers_registered(2)
        redis = Redis.from_url(stack.redis.url)
        producer = Producer(stack.url, size_classes()).start()
        events: list[dict[str, Any]] = []
        time.sleep(2)
        for _ in range(kills):
            time.sleep(rnd.uniform(0.3, 2.0))
            # a random moment while jobs flow; preferably one when the chosen worker is mid-batch
            index = rnd.randrange(len(stack.workers))
            running: list[str] = []
            wait_until = time.monotonic() + 3
            while time.monotonic() < wait_until:
                running = stack.jobs_running_on(redis, index)
                if running:
                    break
                time.sleep(0.05)
            proc = stack.workers[index]
            assert proc is not None
            t_kill = time.time()
            stack.kill_worker(index)
            events.append({"worker": index, "pid": proc.pid, "at": t_kill, "running_jobs": running})
            stack.start_worker(index)
        producer.stop()
        finals = final_statuses(stack.url, producer.accepted, timeout_s=240)
        crashes = stack.crashed()
        redis.close()
    recoveries = []
    for ev in events:
        stamps = [epoch(finals[j].get("ended_at")) for j in ev["running_jobs"] if j in finals]
        ends = [e for e in stamps if e is not None]
        if ends:
            recoveries.append(max(ends) - ev["at"])
    statuses = [f["status"] for f in finals.values()]
    return {
        "kills": kills,
        "retry_interval_s": retry_interval_s,
        "kills_with_jobs_running": sum(1 for e in events if e["running_jobs"]),
        "jobs_interrupted": sum(len(e["running_jobs"]) for e in events),
        "accepted": len(producer.accepted),
        "final_status": status_counts(statuses),
        "lost": sum(1 for s in statuses if s != "finished"),
        "upload_status_counts": status_counts(producer.statuses),
        "recovery_s": {
            "p50": _r(percentile(recoveries, 50)),
            "max": _r(max(recoveries) if recoveries else None),
            "samples": len(recoveries),
        },
        "unexpected_exits": crashes,
    }


def redis_restarts(root: Path, restarts: int, down_s: float = 2.0) -> dict[str, Any]:
    with ProcessStack(root / "redis", suite_config(workers=1)) as stack:
        stack.wait_workers_registered()
        classes = size_classes()
        accepted: list[str] = []
        outage_statuses: list[int | str] = []
        rounds = []
        with httpx.Client() as client:
            for k in range(restarts):
                stack.pause_workers()  # jobs stay queued until the restart
                batch = []
                for i in range(8):
                    r = upload(
                        client,
                        stack.url,
                        KEYS[0],
                        stamped(classes[0], 50_000 + 100 * k + i),
                        raw=True,
                    )
                    if r.status_code == 202:
                        batch.append(r.json()["job_id"])
                accepted += batch
                hard = k % 2 == 1
                probe_stop = threading.Event()

                def probe(stop: threading.Event = probe_stop, job: str = batch[0]) -> None:
                    with httpx.Client() as c:
                        while not stop.is_set():
                            try:
                                r = c.get(
                                    f"{stack.url}/v1/jobs/{job}", headers=stack.headers(), timeout=5
                                )
                                outage_statuses.append(r.status_code)
                            except httpx.HTTPError as exc:
                                outage_statuses.append(f"error:{type(exc).__name__}")
                            time.sleep(0.05)

                prober = threading.Thread(target=probe, daemon=True)
                prober.start()
                live = k % 2 == 1  # odd rounds: the worker is running when Redis goes away
                if live:
                    stack.resume_workers()
                down = stack.restart_redis(hard=hard, down_s=down_s)
                t_up = time.monotonic()
                if not live:
                    stack.resume_workers()
                finals = final_statuses(stack.url, batch, timeout_s=120)
                probe_stop.set()
                prober.join()
                rounds.append({
                    "kind": "SIGKILL" if hard else "SIGTERM", "worker": "running" if live else "paused",
                    "queued": len(batch), "down_s": round(down, 2),
                    "finished": sum(1 for f in finals.values() if f["status"] == "finished"),
                    "drain_s": round(time.monotonic() - t_up, 2),
                })  # fmt: skip
        finals = final_statuses(stack.url, accepted, timeout_s=60)
        crashes = stack.crashed()
        log = stack.log_text()
    return {
        "restarts": restarts,
        "rounds": rounds,
        "accepted": len(accepted),
        "lost": sum(1 for f in finals.values() if f["status"] != "finished"),
        "api_statuses_during_restarts": status_counts(outage_statuses),
        "api_500_during_restarts": sum(1 for s in outage_statuses if s == 500),
        "worker_crashes": [c for c in crashes if c["process"].startswith("worker")],
        "api_crashes": [c for c in crashes if c["process"] == "api"],
        "worker_log_tracebacks": log.count("Traceback"),
    }


def webhook_outage(root: Path, jobs: int, outage_s: float) -> dict[str, Any]:
    env = {
        "LORAVET_API_ALLOW_PRIVATE_WEBHOOKS": "true",
        "LORAVET_WORKER_ALLOW_PRIVATE_WEBHOOKS": "true",
    }
    receiver = WebhookReceiver().start()
    with ProcessStack(
        root / "webhooks", suite_config(workers=1, api_env=env, worker_env=env)
    ) as stack:
        stack.wait_workers_registered()
        with httpx.Client() as client:
            sub = client.post(
                f"{stack.url}/v1/webhooks", json={"url": receiver.url}, headers=stack.headers()
            ).json()
            classes = size_classes()[:1]
            accepted, t_down, t_up = [], None, None
            for i in range(jobs):
                if i == jobs // 3:
                    receiver.stop()
                    t_down = time.time()
                if t_down and t_up is None and time.time() - t_down >= outage_s:
                    receiver.start()
                    t_up = time.time()
                r = upload(client, stack.url, KEYS[0], stamped(classes[0], 70_000 + i), raw=True)
                if r.status_code == 202:
                    accepted.append(r.json()["job_id"])
                time.sleep(outage_s / max(1, jobs // 2))
            if t_up is None:
                time.sleep(max(0.0, outage_s - (time.time() - (t_down or time.time()))))
                receiver.start()
                t_up = time.time()
            finals = final_statuses(stack.url, accepted, timeout_s=120)
            expected = {j for j, f in finals.items() if f["status"] == "finished"}
            deadline = time.monotonic() + 120
            got: dict[str, dict[str, Any]] = {}
            while time.monotonic() < deadline:
                got = _events(receiver, sub["secret"])
                if {v["job"] for v in got.values()} >= expected:
                    break
                time.sleep(0.2)
            deliveries = client.get(
                f"{stack.url}/v1/webhooks/{sub['id']}/deliveries?limit=200", headers=stack.headers()
            ).json()
        crashes = stack.crashed()
    receiver.stop()
    jobs_notified = {v["job"] for v in got.values()}
    last_in = max((v["at"] for v in got.values()), default=None)
    return {
        "jobs": len(accepted),
        "outage_s": round((t_up or 0) - (t_down or 0), 1),
        "events_expected": len(expected),
        "events_received": len(jobs_notified & expected),
        "lost": len(expected - jobs_notified),
        "duplicates_received": sum(v["copies"] - 1 for v in got.values()),
        "bad_signatures": sum(1 for v in got.values() if not v["signature_ok"]),
        "recovery_s": _r(last_in - t_up) if last_in and t_up else None,
        "delivery_outcomes": status_counts([d["outcome"] for d in deliveries]),
        "crashes": crashes,
    }


def _events(receiver: WebhookReceiver, secret: str) -> dict[str, dict[str, Any]]:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    out: dict[str, dict[str, Any]] = {}
    for rec in list(receiver.received):
        headers = rec.headers
        wid, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        want = (
            "v1,"
            + base64.b64encode(
                hmac.new(key, f"{wid}.{ts}.".encode() + rec.body, hashlib.sha256).digest()
            ).decode()
        )
        body = json.loads(rec.body)
        if body.get("type") != "report.completed":
            continue
        entry = out.setdefault(
            wid, {"job": body["data"]["job_id"], "copies": 0, "at": rec.at, "signature_ok": True}
        )
        entry["copies"] += 1
        entry["signature_ok"] &= want in headers.get("webhook-signature", "").split()
    return out


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def run(
    root: Path,
    *,
    kills: int,
    restarts: int,
    webhook_jobs: int,
    outage_s: float,
    retry_interval_s: int = 0,
) -> dict[str, Any]:
    return {
        "worker_sigkill": worker_kills(root, kills, retry_interval_s),
        "redis_restart": redis_restarts(root, restarts),
        "webhook_receiver_down": webhook_outage(root, webhook_jobs, outage_s),
    }
