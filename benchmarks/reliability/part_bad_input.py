"""Part 1a: every hostile and mutated file through the real API.

Figures: responses by status code (per input kind), 5xx (goal 0), requests that got no answer,
worker crashes (goal 0), API and worker RSS before / after / peak, and what became of the uploads
the API accepted (a mutant can still be a valid LoRA: each must end ``finished`` or ``failed``
with a reason, never vanish).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from benchmarks.reliability.inputs import BadInput, catalogue, mutants
from benchmarks.reliability.suite_stack import suite_config
from harness.client import count_5xx, status_counts, upload, wait_job
from harness.profile import KEYS
from harness.stack import ProcessStack, RssSampler, mib

MEMORY_GROWTH_LIMIT_MIB = 256
"""RSS growth per process over the whole part above which memory does not count as bounded."""


def run(root: Path, *, mutant_count: int, concurrency: int = 4) -> dict[str, Any]:
    items: list[BadInput] = catalogue() + mutants(mutant_count)
    with ProcessStack(root / "bad-input", suite_config(workers=1)) as stack:
        stack.wait_workers_registered()
        before = stack.rss()
        results: list[dict[str, Any]] = []
        t0 = time.monotonic()
        with RssSampler(stack) as sampler, httpx.Client() as client:

            def send(item: BadInput) -> dict[str, Any]:
                t = time.monotonic()
                row: dict[str, Any] = {
                    "name": item.name,
                    "kind": item.kind,
                    "bytes": len(item.data),
                }
                try:
                    r = upload(
                        client, stack.url, KEYS[0], item.data, item.config, raw=item.raw, timeout=30
                    )
                    row["status"] = r.status_code
                    row["problem_json"] = r.headers.get("content-type", "").startswith(
                        "application/problem+json"
                    )
                    row["traceback_leak"] = "Traceback" in r.text or 'File "' in r.text
                    if r.status_code in (200, 202):
                        row["job_id"] = r.json()["job_id"]
                    else:
                        row["problem_type"] = (
                            r.json().get("type", "") if row["problem_json"] else None
                        )
                except httpx.TimeoutException:
                    row["status"] = "timeout"
                except httpx.HTTPError as exc:
                    row["status"] = f"connection_error:{type(exc).__name__}"
                row["seconds"] = round(time.monotonic() - t, 4)
                return row

            with ThreadPoolExecutor(concurrency) as pool:
                results = list(pool.map(send, items))
            sent_s = time.monotonic() - t0
            outcomes: list[dict[str, Any]] = []
            for row in results:
                if row.get("job_id"):
                    job = wait_job(client, stack.url, KEYS[0], row["job_id"], timeout_s=120)
                    row["job_status"] = job["status"]
                    outcomes.append({"name": row["name"], "status": job["status"],
                                     "failure": (job.get("failure") or {}).get("kind")})  # fmt: skip
        time.sleep(0.5)
        after = stack.rss()
        crashes = stack.crashed()
    statuses = [r["status"] for r in results]
    counts = status_counts(statuses)
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], {}).setdefault(str(r["status"]), 0)
        by_kind[r["kind"]][str(r["status"])] += 1
    growth = {
        k: (mib(after[k]) or 0) - (mib(before[k]) or 0)
        for k in before
        if before[k] and after.get(k)
    }
    non_answers = [r for r in results if not isinstance(r["status"], int)]
    errors_not_problem = [r["name"] for r in results if isinstance(r["status"], int) and r["status"] >= 400 and not r.get("problem_json")]  # fmt: skip
    lost = [o for o in outcomes if o["status"] not in ("finished", "failed")]
    return {
        "uploads": len(items),
        "catalogue": sum(1 for i in items if i.kind == "catalogue"),
        "mutants": sum(1 for i in items if i.kind != "catalogue"),
        "seconds": round(sent_s, 2),
        "status_counts": counts,
        "status_by_kind": by_kind,
        "server_errors_5xx": count_5xx(counts),
        "no_answer": len(non_answers),
        "no_answer_examples": [r["name"] for r in non_answers[:10]],
        "errors_not_problem_json": errors_not_problem[:10],
        "traceback_leaks": sum(1 for r in results if r.get("traceback_leak")),
        "accepted": len(outcomes),
        "accepted_outcomes": status_counts([o["status"] for o in outcomes]),
        "accepted_lost": len(lost),
        "worker_crashes": len([c for c in crashes if c["process"].startswith("worker")]),
        "api_crashes": len([c for c in crashes if c["process"] == "api"]),
        "rss_mib": {
            "before": {k: mib(v) for k, v in before.items()},
            "after": {k: mib(v) for k, v in after.items()},
            "peak": {k: mib(v) for k, v in sampler.peak.items()},
            "growth": growth,
        },
        "memory_bounded": all(g < MEMORY_GROWTH_LIMIT_MIB for g in growth.values()),
        "slowest": sorted(
            ({"name": r["name"], "seconds": r["seconds"], "status": r["status"]} for r in results),
            key=lambda r: -r["seconds"],
        )[:5],
    }
