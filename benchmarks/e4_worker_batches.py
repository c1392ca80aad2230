"""E4, the service side: jobs per second of one resident worker at batch 1 and 16, and its per-job
overhead, on minilm-sized adapters through the real stack (embedded Redis, ``loravet api``,
``loravet worker`` as processes, the shipped predictors).

The worker is paused (SIGSTOP) while ``n`` distinct zoo adapters are uploaded, so the queue is full
when it resumes; the clock runs from the resume to the last job finished. Beside it, the same
adapters go through ``vet_batch`` in this process at the same batch size (what the worker computes
per job); the difference is the worker's per-job overhead (dequeue, store read, report write,
job bookkeeping in Redis).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import torch

from harness.client import upload, wait_job
from harness.profile import API_KEY, settings_env
from harness.stack import ProcessStack, StackConfig
from loravet import SHIPPED_PREDICTORS
from models.registry import PredictorRegistry
from training.zoo_dataset import Zoo, adapter_paths
from workers.vetting_pipeline import VetInput, vet_batch

BATCH_SIZES = (1, 16)


def _inputs(zoo_dir: str, n: int) -> list[tuple[bytes, bytes | None]]:
    zoo = Zoo.open(zoo_dir)
    out = []
    for lora_id in zoo.ids("all")[:n]:
        file, config = adapter_paths(zoo, zoo.rows[lora_id])
        out.append((file.read_bytes(), config.read_bytes() if config else None))
    return out


def _in_process_s(items: list[tuple[bytes, bytes | None]], batch_size: int) -> float:
    """Seconds per job of ``vet_batch`` alone, at ``batch_size``, with the shipped predictors."""
    torch.set_num_threads(1)
    registry = PredictorRegistry.from_directory(SHIPPED_PREDICTORS)
    inputs = [VetInput(adapter=a, config=c) for a, c in items]
    vet_batch(inputs[:2], registry)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(inputs), batch_size):
        vet_batch(inputs[i : i + batch_size], registry)
    return (time.perf_counter() - start) / len(inputs)


def _through_worker(
    items: list[tuple[bytes, bytes | None]], batch_size: int, root: Path
) -> dict[str, Any]:
    config = StackConfig(
        workers=1,
        predictors=SHIPPED_PREDICTORS,
        worker_env=settings_env("LORAVET_WORKER_", {"batch_size": batch_size}),
        # the whole queue is filled at once: lift the per-key limits a hub would keep
        api_env=settings_env(
            "LORAVET_API_",
            {"rate_limit_per_minute": 10 * len(items) + 100, "max_active_jobs_per_key": len(items)},
        ),
    )
    with ProcessStack(root, config) as stack, httpx.Client() as client:
        stack.wait_workers_registered(1)
        stack.pause_workers()
        jobs = []
        for adapter, cfg in items:
            r = upload(client, stack.url, API_KEY, adapter, cfg)
            r.raise_for_status()
            jobs.append(r.json()["job_id"])
        start = time.time()
        stack.resume_workers()
        ends: list[float] = []
        statuses: list[str] = []
        batch_sizes: list[int] = []
        for job_id in jobs:
            done = wait_job(client, stack.url, API_KEY, job_id, poll_s=0.05)
            statuses.append(done["status"])
            if done.get("ended_at"):
                ends.append(datetime.fromisoformat(done["ended_at"]).timestamp())
            if done.get("report_url") and len(batch_sizes) < 8:
                report = client.get(done["report_url"], headers=stack.headers()).json()
                batch_sizes.append(report["timings"]["batch_size"])
    wall = max(ends) - start
    return {
        "jobs": len(jobs),
        "finished": statuses.count("finished"),
        "wall_s": wall,
        "jobs_per_s": len(jobs) / wall,
        "clock": "from the worker's resume to the last job's ended_at (server clock, same machine)",
        "seconds_per_job": wall / len(jobs),
        "batch_sizes_seen": sorted(set(batch_sizes)),
    }


def run(zoo_dir: str, n: int = 64) -> dict[str, Any]:
    items = _inputs(zoo_dir, n)
    rows = {}
    for batch_size in BATCH_SIZES:
        with tempfile.TemporaryDirectory(prefix="loravet-e4-worker-") as tmp:
            worker = _through_worker(items, batch_size, Path(tmp))
        compute = _in_process_s(items, batch_size)
        rows[str(batch_size)] = {
            **worker,
            "vet_batch_seconds_per_job": compute,
            "overhead_seconds_per_job": worker["seconds_per_job"] - compute,
        }
    return {
        "n": n,
        "by_batch": rows,
        "speedup_batch_16_over_1": rows["16"]["jobs_per_s"] / rows["1"]["jobs_per_s"],
        "median_adapter_bytes": statistics.median(len(a) for a, _ in items),
        "note": "one worker process (one torch thread), the queue filled while it was paused; jobs/s from "
        "its resume to the last job finished (ended_at, server clock); overhead = that time per job minus "
        "vet_batch's time per job in one process at the same batch size",
    }
