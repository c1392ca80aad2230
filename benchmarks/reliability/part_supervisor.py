"""Part 8: the embedded default under worker SIGKILLs: ``loravet serve`` (what ``make run`` starts)
as a new user runs it, its worker killed the way the OOM killer does, several times, while
producers upload.

Figures: jobs lost (every accepted job must end ``finished``), the API's availability (a health
probe every 0.2 s from start to stop: answered / sent), per kill the seconds from the kill to the
report of an upload made right after it (the new worker loads the shipped predictors first), the
supervisor's own lines on stderr, and serve's exit status after Ctrl-C (0: nothing else died).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from benchmarks.reliability.part_faults import Producer, final_statuses, size_classes
from benchmarks.reliability.part_load import stamped
from benchmarks.reliability.suite_stack import SUITE_API, SUITE_WORKER
from harness.client import status_counts, upload, wait_job
from harness.embedded_redis import free_port
from harness.profile import settings_env
from harness.stack import REPO


class HealthProbe:
    """GET /healthz every ``interval_s`` in a thread; counts answers (200) and misses."""

    def __init__(self, url: str, interval_s: float = 0.2) -> None:
        self.url, self.interval_s = url, interval_s
        self.sent = self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.wait(self.interval_s):
                self.sent += 1
                try:
                    if client.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                        self.answered += 1
                except httpx.HTTPError:
                    pass

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _worker_pid(serve: subprocess.Popen[str]) -> int | None:
    for child in psutil.Process(serve.pid).children():
        try:
            if "worker" in child.cmdline():
                return int(child.pid)
        except psutil.Error:
            continue
    return None


def _ready_workers(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/readyz", timeout=2).json().get("workers", 0))
    except (httpx.HTTPError, ValueError):
        return 0


def run(root: Path, *, kills: int, pause_s: float = 3.0) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAVET_")}
    env |= settings_env("LORAVET_API_", SUITE_API) | settings_env("LORAVET_WORKER_", SUITE_WORKER)
    # a killed worker's running jobs come back after execution_ttl_s (5 s here) once a live
    # worker's maintenance runs: every 2 s here, 30 s by default
    env["LORAVET_WORKER_MAINTENANCE_INTERVAL_S"] = "2"
    env["PYTHONPATH"] = str(REPO)
    root.mkdir(parents=True, exist_ok=True)
    err_path, out_path = root / "serve-stderr.log", root / "serve-stdout.log"
    # files, not pipes: serve's children write to its terminal, and a pipe nobody drains would
    # block them once full
    with err_path.open("w") as err, out_path.open("w") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "loravet.cli", "serve", "--port", str(port),
             "--data", str(root / "var")],  # the shipped predictors, as `make run` loads them
            cwd=REPO, env=env, stdout=out, stderr=err, text=True,
        )  # fmt: skip
        events: list[dict[str, Any]] = []
        left_behind: list[int] = []  # the killed workers' own children (RQ's scheduler)
        accepted: list[str] = []
        try:
            deadline = time.monotonic() + 120
            key = None
            while key is None:
                if serve.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"loravet serve did not start; see {err_path}")
                lines = out_path.read_text().splitlines()
                key = next((x.split()[-1] for x in lines if x.startswith("API key")), None)
                time.sleep(0.1)
            while _ready_workers(url) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"loravet serve was not ready in 120 s; see {err_path}")
                time.sleep(0.2)
            with HealthProbe(url) as probe:
                producer = Producer(
                    url, size_classes()[:1], threads=1, key=key, pause_s=0.3
                ).start()
                for _ in range(kills):
                    time.sleep(pause_s)
                    pid = _worker_pid(serve)
                    if pid is None:
                        raise RuntimeError("no worker under loravet serve to kill")
                    left_behind += [c.pid for c in psutil.Process(pid).children(recursive=True)]
                    killed_at = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                    # a new upload right after the kill: its report means a new worker serves
                    with httpx.Client() as client:
                        probe_data = stamped(size_classes()[0], 900_000 + len(events))
                        r = upload(client, url, key, probe_data, raw=True)
                        job = r.json()["job_id"] if r.status_code == 202 else None
                        done = (
                            job is not None
                            and wait_job(client, url, key, job, timeout_s=180)["status"]
                            == "finished"
                        )
                    events.append(
                        {"upload_status": r.status_code,
                         "report_after_kill_s": round(time.monotonic() - killed_at, 2) if done else None}
                    )  # fmt: skip
                time.sleep(pause_s)
                producer.stop()
                accepted = producer.accepted
                finals = final_statuses(url, accepted, timeout_s=300, key=key)
            serve.send_signal(signal.SIGINT)
            exit_status = serve.wait(90)
        finally:
            if serve.poll() is None:
                for child in psutil.Process(serve.pid).children():
                    child.kill()
                serve.kill()
                serve.wait()
    lines = [
        line.strip()
        for line in err_path.read_text(errors="replace").splitlines()
        if line.startswith("loravet serve:")
    ]
    statuses = [f["status"] for f in finals.values()]
    return {
        "kills": kills,
        "accepted": len(accepted),
        "final_status": status_counts(statuses),
        "lost": sum(1 for s in statuses if s != "finished"),
        "health_probes": {"sent": probe.sent, "answered": probe.answered},
        "api_availability": round(probe.answered / probe.sent, 4) if probe.sent else None,
        "restarts": events,
        "supervisor_lines": lines,
        "serve_exit_status": exit_status,
        "killed_workers_children_alive_after_stop": [
            p for p in left_behind if psutil.pid_exists(p)
        ],
        "tracebacks_on_stderr": err_path.read_text(errors="replace").count("Traceback"),
        "upload_status_counts": status_counts(producer.statuses),
    }
