"""Part 2: API conformance with schemathesis against the served ``/openapi.json``.

Every operation gets generated requests (valid and invalid, with the API key); the figure is
server errors (5xx, goal 0) and, beside it, every other check schemathesis runs (status codes,
content types, response schemas documented in the OpenAPI) with its failure count.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.reliability.suite_stack import suite_config
from harness.client import count_5xx, status_counts
from harness.profile import KEYS
from harness.stack import ProcessStack

CONFIG = Path(__file__).resolve().parent / "schemathesis.toml"


def _schemathesis() -> list[str]:
    exe = Path(sys.executable).with_name("schemathesis")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "schemathesis.cli"]


def run(root: Path, *, max_examples: int, max_time_s: int, workers: int = 2) -> dict[str, Any]:
    out = root / "conformance"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with ProcessStack(out / "stack", suite_config(workers=1)) as stack:
        stack.wait_workers_registered()
        schema = httpx.get(f"{stack.url}/openapi.json", timeout=10).json()
        operations = [f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops]
        cmd = [
            *_schemathesis(), "--config-file", str(CONFIG), "run", f"{stack.url}/openapi.json",
            "-H", f"X-API-Key: {KEYS[0]}", "--max-examples", str(max_examples),
            "--max-time", str(max_time_s), "--seed", "1", "-w", str(workers), "--no-color",
            "--report", "ndjson", "--report-ndjson-path", str(out / "events.ndjson"),
            "--request-timeout", "30", "--generation-database", "none",
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=max_time_s + 600, cwd=out
        )
        wall = time.monotonic() - t0
        crashes = stack.crashed()
    log = proc.stdout + proc.stderr
    (out / "schemathesis.log").write_text(log)
    statuses: list[int] = []
    failures: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    if (out / "events.ndjson").exists():
        for line in (out / "events.ndjson").read_text().splitlines():
            _collect(json.loads(line), statuses, failures, examples)
    counts = status_counts(statuses)
    summary = [
        ln for ln in log.splitlines() if re.search(r"passed|failed|error|Test cases|Operations", ln)
    ]
    return {
        "operations": operations,
        "max_examples": max_examples,
        "max_time_s": max_time_s,
        "wall_seconds": round(wall, 1),
        "returncode": proc.returncode,
        "requests": len(statuses),
        "status_counts": counts,
        "server_errors_5xx": count_5xx(counts),
        "failed_checks": failures,
        "failure_examples": {k: v[:3] for k, v in examples.items()},
        "summary_lines": summary[-15:],
        "process_crashes": crashes,
    }


def _collect(
    obj: Any, statuses: list[int], failures: dict[str, int], examples: dict[str, list[str]]
) -> None:
    """Walk an ndjson event: response status codes and failed checks, whatever the nesting."""
    if isinstance(obj, dict):
        resp = obj.get("response")
        if isinstance(resp, dict) and isinstance(resp.get("status_code"), int):
            statuses.append(resp["status_code"])
        if obj.get("status") in ("failure", "FAILURE", "failed") and isinstance(
            obj.get("name"), str
        ):
            failures[obj["name"]] = failures.get(obj["name"], 0) + 1
            text = obj.get("failure_info") or obj.get("message") or obj.get("context")
            if text:
                examples.setdefault(obj["name"], []).append(str(text)[:300])
        for v in obj.values():
            _collect(v, statuses, failures, examples)
    elif isinstance(obj, list):
        for v in obj:
            _collect(v, statuses, failures, examples)
