"""Markdown tables of a reliability results JSON (the figures of docs/reliability.md).

python -m benchmarks.reliability.report benchmarks/results/reliability/reliability_full.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _table(head: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    out += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _codes(d: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in d.items())


def render(r: dict[str, Any]) -> str:
    p, parts = r["parts"], []
    prov = r["provenance"]
    parts.append(
        f"Budget `{r['budget']['name']}`, git `{str(prov.get('git_sha'))[:12]}` (dirty: {prov.get('git_dirty')}), "
        f"{prov['machine']['cpu_count']} CPUs, Python {prov['machine']['python']}, created {prov['created_at']}."
    )
    if "bad_input" in p:
        b = p["bad_input"]
        rows = [[k, _codes(v)] for k, v in b["status_by_kind"].items()]
        parts.append("### Bad input through the API\n\n" + _table(
            ["input kind", "responses by status"], rows) + "\n\n" + _table(
            ["figure", "value"],
            [["uploads (catalogue + mutants)", f"{b['uploads']} ({b['catalogue']} + {b['mutants']})"],
             ["responses by status", _codes(b["status_counts"])],
             ["5xx", b["server_errors_5xx"]], ["requests without an answer", b["no_answer"]],
             ["tracebacks in responses", b["traceback_leaks"]],
             ["accepted (valid mutants) and their jobs", f"{b['accepted']}: {_codes(b['accepted_outcomes'])}"],
             ["worker / API crashes", f"{b['worker_crashes']} / {b['api_crashes']}"],
             ["RSS before → after (peak), MiB", "; ".join(
                 f"{k} {b['rss_mib']['before'].get(k)} → {b['rss_mib']['after'].get(k)} ({b['rss_mib']['peak'].get(k)})"
                 for k in b["rss_mib"]["before"])],
             ["slowest answer", f"{b['slowest'][0]['seconds']} s ({b['slowest'][0]['name']})"]]))  # fmt: skip
    if "fuzz" in p:
        f = p["fuzz"]
        parts.append("### Fuzzing the header parser and reader (atheris)\n\n" + _table(
            ["figure", "value"],
            [["time budget", f"{f['seconds_budget']} s"], ["executions", f"{f['executions']:,}" if f["executions"] else None],
             ["executions / s", f["execs_per_second"]], ["coverage (edges / features)", f"{f['coverage_edges']} / {f['features']}"],
             ["corpus (seed → after)", f"{f['seed_inputs']} → {f['corpus_after']}"], ["crashes", f["crashes"]],
             ["peak RSS", f"{f['peak_rss_mb']} MB"], ["corpus kept in the repo", f["corpus_kept"]]]))  # fmt: skip
    if "conformance" in p:
        c = p["conformance"]
        parts.append("### API conformance (schemathesis)\n\n" + _table(
            ["figure", "value"],
            [["operations", len(c["operations"])], ["requests", c["requests"]],
             ["responses by status", _codes(c["status_counts"])], ["5xx", c["server_errors_5xx"]],
             ["failed checks", _codes(c["failed_checks"]) or "none"],
             ["budget", f"{c['max_examples']} examples per operation, {c['max_time_s']} s"]]))  # fmt: skip
    if "load" in p:
        lo = p["load"]
        if "load" in lo:
            L = lo["load"]
            rows = [[n, f"{v['bytes'] / 1e6:.2f}", v["uploads"], v["floor_s"], v["p50_s"], v["p99_s"], v["p50_ratio_to_floor"]]
                    for n, v in L["per_class"].items()]  # fmt: skip
            parts.append("### Load\n\n" + _table(
                ["figure", "value"],
                [["uploads / concurrent clients / workers", f"{L['uploads']} / {L['clients']} / {r['budget']['load_workers']}"],
                 ["errors", L["errors"]], ["responses by status", _codes(L["status_counts"])],
                 ["wall time", f"{L['wall_seconds']} s"],
                 ["throughput", f"{L['throughput_uploads_per_s']} uploads/s, {L['throughput_mb_per_s']} MB/s ({L['total_mb']} MB)"],
                 ["upload-to-report, all uploads", f"p50 {L['latency_all_p50_s']} s, p99 {L['latency_all_p99_s']} s"],
                 ["peak RSS, MiB", _codes(L["rss_peak_mib"])]]) + "\n\n" + _table(
                ["size class", "MB", "uploads", "floor: sha256 + load_adapter (s)", "p50 (s)", "p99 (s)", "p50 / floor"], rows))  # fmt: skip
        if "isolated" in lo:
            i = lo["isolated"]
            parts.append("Largest file alone (one client, nothing else in flight):\n\n" + _table(
                ["class", "runs", "floor (s)", "floor with the static checks (s)", "p50 upload-to-report (s)", "min (s)", "p50 / floor", "goal ≤ 3x"],
                [[i["class"], i["repeats"], i["floor_s"], round(lo["floors"][i["class"]]["hash_parse_checks_s"], 3),
                  i["p50_s"], i["min_s"], i["ratio_to_floor"], "met" if i["goal_3x_met"] else "not met"]]))  # fmt: skip
        if "backpressure" in lo:
            bp = lo["backpressure"]
            parts.append("Backpressure (workers paused, per-key quota "
                         f"{bp['per_key_quota']}, queue cap {bp['queue_cap']}):\n\n" + _table(
                ["figure", "value"],
                [["flooding key", _codes(bp["flooding_key"])], ["another key meanwhile", _codes(bp["other_key"])],
                 ["three more keys filling the queue", _codes(bp["queue_fill_keys"])],
                 ["/healthz during the flood (ms)", _codes(bp["health_during_flood_ms"])],
                 ["accepted jobs finished after the workers resumed", f"{bp['accepted_finished_after_resume']} of {bp['accepted']}"],
                 ["5xx", bp["server_errors_5xx"]]]))  # fmt: skip
    if "faults" in p:
        k, rr, w = (
            p["faults"]["worker_sigkill"],
            p["faults"]["redis_restart"],
            p["faults"]["webhook_receiver_down"],
        )
        parts.append("### Faults\n\n" + _table(
            ["fault", "count", "jobs / events", "lost", "recovery", "notes"],
            [["worker SIGKILL (2 workers, restarted)", k["kills"], f"{k['accepted']} jobs", k["lost"],
              f"p50 {k['recovery_s']['p50']} s, max {k['recovery_s']['max']} s",
              f"{k['kills_with_jobs_running']} kills hit running jobs ({k['jobs_interrupted']} job interruptions); retry interval {k.get('retry_interval_s', 1)} s; final: {_codes(k['final_status'])}"],
             ["Redis restart, jobs queued", rr["restarts"], f"{rr['accepted']} jobs", rr["lost"],
              "; ".join(f"{x['kind']}/{x.get('worker', '-')}: drained in {x['drain_s']} s" for x in rr["rounds"]),
              f"API during restarts: {_codes(rr['api_statuses_during_restarts'])}; worker crashes {len(rr['worker_crashes'])}"],
             ["webhook receiver down", f"{w['outage_s']} s", f"{w['events_expected']} events", w["lost"],
              f"{w['recovery_s']} s after it came back",
              f"duplicates {w['duplicates_received']}, bad signatures {w['bad_signatures']}; attempts: {_codes(w['delivery_outcomes'])}"]]))  # fmt: skip
    if "store" in p:
        st = p["store"]
        parts.append("### Content store down (API and two workers on separate hosts, S3 bucket)\n\n" + _table(
            ["figure", "value"],
            [["outages (store refusing connections)", f"{st['outages']} x {st['outage_s']} s"],
             ["jobs accepted / lost", f"{st['accepted']} / {st['lost']}"],
             ["jobs queued when the store went down (workers then woken into the outage)",
              ", ".join(str(x) for x in st["jobs_queued_when_cut"])],
             ["worker waits for the store logged", st["worker_waits_logged"]],
             ["final job statuses", _codes(st["final_status"])],
             ["API answers during the outages", _codes(st["answers_during_outages"])],
             ["5xx other than 503", st["server_errors_5xx_other_than_503"]],
             ["recovery: store back to the last earlier job finished", ", ".join(f"{x} s" for x in st["recovery_s"])],
             ["processes that exited on their own", len(st["unexpected_exits"])]]))  # fmt: skip
    if "supervisor" in p:
        sv = p["supervisor"]
        parts.append("### `loravet serve` supervising its worker (SIGKILLs)\n\n" + _table(
            ["figure", "value"],
            [["worker SIGKILLs", sv["kills"]],
             ["jobs accepted / lost", f"{sv['accepted']} / {sv['lost']}"],
             ["API health probes answered", f"{sv['health_probes']['answered']} of {sv['health_probes']['sent']}"],
             ["kill to the report of an upload made right after it", ", ".join(f"{e['report_after_kill_s']} s" for e in sv["restarts"])],
             ["serve's exit status after Ctrl-C", sv["serve_exit_status"]],
             ["killed workers' child processes still alive after the stop", len(sv["killed_workers_children_alive_after_stop"])],
             ["tracebacks on serve's stderr", sv["tracebacks_on_stderr"]],
             ["supervisor lines", "<br>".join(sv["supervisor_lines"])]]))  # fmt: skip
    if "security" in p:
        s = p["security"]
        cb = s["callbacks"]
        parts.append("### Security\n\n" + _table(
            ["check", "result"],
            [["API routes needing the key (no key / wrong key / wrong bearer / key in the query: 401)",
              f"{sum(1 for x in s['auth']['routes'] if not x.get('public'))} routes, failures: {len(s['auth']['failures'])}"],
             ["public routes", ", ".join(x["route"] for x in s["auth"]["routes"] if x.get("public"))],
             ["keys, key digests or webhook secrets in API + worker logs (DEBUG)", s["keys_in_logs"]["found_in_logs"] or "none"],
             ["keys in the Redis AOF", s["keys_in_logs"]["found_in_redis_aof"] or "none"],
             ["pickle with a file-creating payload", f"{_codes(s['pickle']['statuses'])}; file created: {s['pickle']['marker_created']}"],
             ["path-like filenames", f"{len(s['filenames']['uploads'])} uploads, files outside the content-addressed layout: {len(s['filenames']['stray_files'])}, escaped: {len(s['filenames']['escaped'])}"],
             ["traversal in ids", _codes(s["filenames"]["traversal_urls"])],
             ["private/loopback/link-local/metadata IP literals", f"{sum(1 for v in cb['ip_literals'].values() if v == 422)} of {len(cb['ip_literals'])} refused by the API (422)"],
             ["numeric host forms (2130706433, 0x7f000001, 127.1, octal)", "; ".join(f"{u.split('/')[2]}: " + ("API 422" if v["api"] == 422 else f"API {v['api']}, delivery {v.get('delivery', '')[:7]}") for u, v in cb["numeric_forms"].items())],
             ["DNS names resolving to forbidden addresses (resolver override)", f"{sum(1 for v in cb['dns_names'].values() if str(v.get('delivery', '')).startswith('refused'))} of {len(cb['dns_names'])} refused at delivery"],
             ["non-loopback connections attempted", len(cb["non_loopback_connect_attempts"])],
             ["routes outside the OpenAPI, without key or session", "; ".join(
                 f"{k}: {v['status']}" for k, v in s["auth"].get("non_schema_routes", {}).items())],
             ["web sign-in with a valid and a wrong key (then grepped for)", _codes(s.get("web_sign_in", {}))]]))  # fmt: skip
    g = r["goals"]
    parts.append(
        "### Goals\n\n"
        + _table(["goal", "met"], [[k, "yes" if v else "**no**"] for k, v in g.items()])
    )
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
