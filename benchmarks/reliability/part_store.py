"""Part 7: the content store down while jobs flow, in the multi-machine shape.

The API and two workers run as separate processes in directories of their own and share only Redis
and an S3 bucket (a real S3-protocol server, moto, with authentication on). The bucket is reached
through a loopback proxy; cutting the proxy makes the store refuse every connection without losing
its objects, as a MinIO restart or a network partition does. Producers upload all along.

Figures: jobs lost (every accepted job must end ``finished``: workers wait out the outage without
spending retries), the API's answers during each outage (503 with Retry-After is the designed
answer, a 500 would be a bug), recovery (from the store's return to the last job finished), and
processes that exited on their own.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue

from benchmarks.reliability.part_faults import Producer, epoch, final_statuses, size_classes
from benchmarks.reliability.suite_stack import suite_config
from core.contracts import VET_QUEUE
from harness.client import count_5xx, status_counts
from harness.embedded_s3 import EmbeddedS3
from harness.profile import settings_env
from harness.stack import ProcessStack
from harness.tcp_proxy import TcpProxy


def run(root: Path, *, outages: int, outage_s: float) -> dict[str, Any]:
    with EmbeddedS3(root / "s3") as s3, TcpProxy(s3.port) as proxy:
        store = {**s3.settings(prefix=f"rel-{uuid.uuid4().hex[:8]}/"), "s3_endpoint_url": proxy.url}
        config = suite_config(
            workers=2,
            separate_hosts=True,
            api_env=settings_env("LORAVET_API_", store),
            worker_env=settings_env("LORAVET_WORKER_", store),
        )
        with ProcessStack(root / "store-outage", config) as stack:
            stack.wait_workers_registered(2)
            producer = Producer(stack.url, size_classes()).start()
            time.sleep(2)
            windows: list[dict[str, Any]] = []
            queue = Queue(VET_QUEUE, connection=Redis.from_url(stack.redis.url))
            for _ in range(outages):
                # jobs queued while the workers sleep meet the outage when they wake: the workers
                # must wait for the store, not fail the jobs
                stack.pause_workers()
                time.sleep(1.0)
                first = len(producer.statuses)
                cut_at = time.time()
                proxy.cut()
                queued_at_cut = queue.count
                stack.resume_workers()
                time.sleep(outage_s)
                proxy.restore()
                back_at = time.time()
                during = producer.statuses[first : len(producer.statuses)]
                windows.append(
                    {"cut_at": cut_at, "back_at": back_at, "queued_at_cut": queued_at_cut,
                     "answers": status_counts(during)}
                )  # fmt: skip
                time.sleep(max(3.0, outage_s))
            producer.stop()
            finals = final_statuses(stack.url, producer.accepted, timeout_s=300)
            crashes = stack.crashed()
            waits = stack.log_text().count("content store unavailable")
    statuses = [f["status"] for f in finals.values()]
    recoveries = []
    for w in windows:  # from the store's return to the end of the last job queued before it
        ends = [
            epoch(f.get("ended_at"))
            for f in finals.values()
            if (queued := epoch(f.get("enqueued_at"))) is not None and queued < w["back_at"]
        ]
        known = [e for e in ends if e is not None]
        if known:
            recoveries.append(round(max(0.0, max(known) - w["back_at"]), 2))
    during_all: dict[str, int] = {}
    for w in windows:
        for code, n in w["answers"].items():
            during_all[code] = during_all.get(code, 0) + n
    return {
        "outages": outages,
        "outage_s": outage_s,
        "accepted": len(producer.accepted),
        "final_status": status_counts(statuses),
        "lost": sum(1 for s in statuses if s != "finished"),
        "answers_during_outages": during_all,
        "server_errors_5xx_other_than_503": count_5xx(during_all) - during_all.get("503", 0),
        "upload_status_counts": status_counts(producer.statuses),
        "jobs_queued_when_cut": [w["queued_at_cut"] for w in windows],
        "worker_waits_logged": waits,
        "recovery_s": recoveries,
        "unexpected_exits": crashes,
    }
