"""Part 3: load and backpressure against the real stack.

Load: ``uploads`` uploads from ``clients`` concurrent clients (threads with their own connections),
sizes mixed from a small PEFT adapter up to a full SD 1.5 kohya LoRA at rank 128 (the 192 UNet
attention modules + 72 text-encoder modules, float16, ~151 MB), every upload distinct bytes (a
counter stamped into the first tensor). Each client uploads, polls its job to the end and reads the
report; the latency is upload start to report in hand. Figures: errors, throughput, p50/p99 per
size class, each beside the floor of hashing and parsing the same bytes in one process (sha256 +
``lora_io.load_adapter``), and an isolated run of the largest class (one client, nothing else in
flight) for the 3x goal.

Backpressure: the workers are paused (SIGSTOP) while one key floods uploads past its job quota and
then several keys fill the whole queue: 429s with Retry-After, the API keeps answering (health
latency measured during the flood), another key's uploads are accepted, and once the workers resume
every accepted job finishes.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import lora_io
from benchmarks.reliability.suite_stack import suite_config
from harness.client import count_5xx, percentile, status_counts, upload, wait_job
from harness.lora_files import (
    clip_text_modules,
    kohya_lora,
    peft_adapter,
    safetensors_bytes,
    sd15_unet_modules,
)
from harness.profile import KEYS
from harness.stack import ProcessStack, RssSampler, mib


@dataclass
class SizeClass:
    name: str
    share: float
    template: bytes
    stamp_at: int
    """Absolute offset of the first tensor's first 4 values, which carry the counter."""
    stamp_dtype: str = "<f2"


def _kohya_sd15(rank: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = kohya_lora(sd15_unet_modules(), "lora_unet", rank, float(rank), rng)
    tensors |= kohya_lora(clip_text_modules(12, 768), "lora_te", rank, float(rank), rng)
    return safetensors_bytes(tensors)


def _stamp_offset(data: bytes) -> tuple[int, str]:
    (n,) = struct.unpack("<Q", data[:8])
    header = lora_io.parse_header(data[: 8 + n])
    first = min(header.tensors.values(), key=lambda t: t.start)
    assert first.dtype in ("F16", "F32") and first.end - first.start >= 16
    return header.data_start + first.start, "<f2" if first.dtype == "F16" else "<f4"


def size_classes(largest_only: bool = False, with_largest: bool = True) -> list[SizeClass]:
    classes = []
    if not largest_only:
        small = peft_adapter(11, layers=4, hidden=64, rank=8)
        classes.append(SizeClass("peft-small", 0.55, small, *_stamp_offset(small)))
        for name, rank, share in (("sd15-kohya-r8", 8, 0.25), ("sd15-kohya-r32", 32, 0.14)):
            data = _kohya_sd15(rank, rank)
            classes.append(SizeClass(name, share, data, *_stamp_offset(data)))
    if with_largest:
        data = _kohya_sd15(128, 128)
        classes.append(SizeClass("sd15-kohya-r128", 0.06, data, *_stamp_offset(data)))
    return classes


def stamped(cls: SizeClass, counter: int) -> bytes:
    """The template with ``counter`` written into its first tensor as four small finite float16s."""
    buf = bytearray(cls.template)
    values = [((counter >> (8 * i)) & 0xFF) / 4096.0 for i in range(4)]
    raw = np.asarray(values, dtype=cls.stamp_dtype).tobytes()
    buf[cls.stamp_at : cls.stamp_at + len(raw)] = raw
    return bytes(buf)


def floor_seconds(data: bytes, repeats: int = 3) -> dict[str, float]:
    """Median over ``repeats`` of sha256 + load_adapter in this process (and with the static checks)."""
    plain: list[float] = []
    checks: list[float] = []
    limit: Any = contextlib.nullcontext()
    # one BLAS thread, as in a worker (workers/worker_cli.py)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(1)
    with limit:
        return _floor(data, repeats, plain, checks)


def _floor(data: bytes, repeats: int, plain: list[float], checks: list[float]) -> dict[str, float]:
    for _ in range(repeats):
        t0 = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        adapter = lora_io.load_adapter(data)
        t1 = time.perf_counter()
        lora_io.run_checks(adapter)
        t2 = time.perf_counter()
        plain.append(t1 - t0)
        checks.append(t2 - t0)
        del adapter
    return {
        "hash_parse_s": float(np.median(plain)),
        "hash_parse_checks_s": float(np.median(checks)),
    }


def _one_upload(
    client: httpx.Client, base: str, key: str, data: bytes, raw: bool, poll_s: float
) -> dict[str, Any]:
    row: dict[str, Any] = {"bytes": len(data), "retries": 0, "statuses": []}
    t0 = time.monotonic()
    for _attempt in range(50):
        try:
            r = upload(client, base, key, data, raw=raw, timeout=300)
        except httpx.HTTPError as exc:
            row["statuses"].append(f"error:{type(exc).__name__}")
            row["retries"] += 1
            time.sleep(1)
            continue
        row["statuses"].append(r.status_code)
        if r.status_code in (429, 503):
            row["retries"] += 1
            time.sleep(min(5.0, float(r.headers.get("retry-after", "1"))))
            continue
        break
    row["upload_s"] = time.monotonic() - t0
    if row["statuses"] and row["statuses"][-1] in (200, 202):
        body = r.json()
        job = wait_job(client, base, key, body["job_id"], timeout_s=900, poll_s=poll_s)
        row["job_status"] = job["status"]
        if job["status"] == "finished":
            rep = client.get(body["report_url"], headers={"X-API-Key": key}, timeout=60)
            row["report_status"] = rep.status_code
            row["report_bytes"] = len(rep.content)
            if rep.status_code == 200:
                row["latency_s"] = time.monotonic() - t0
    return row


def run_load(
    stack: ProcessStack, classes: list[SizeClass], uploads: int, clients: int, seed: int = 5
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    shares = np.asarray([c.share for c in classes])
    picks = rng.choice(len(classes), size=uploads, p=shares / shares.sum())
    order = list(range(uploads))
    rows: list[dict[str, Any]] = [{} for _ in range(uploads)]
    lock = threading.Lock()
    next_i = [0]

    def client_loop(cid: int) -> None:
        with httpx.Client() as client:
            while True:
                with lock:
                    if next_i[0] >= uploads:
                        return
                    i = order[next_i[0]]
                    next_i[0] += 1
                cls = classes[picks[i]]
                data = stamped(cls, i + 1)
                poll = 0.05 if len(data) < 1_000_000 else 0.1
                row = _one_upload(client, stack.url, KEYS[0], data, raw=i % 2 == 0, poll_s=poll)
                row["class"] = cls.name
                rows[i] = row

    t0 = time.monotonic()
    with RssSampler(stack) as sampler:
        threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.monotonic() - t0
    statuses = [s for r in rows for s in r.get("statuses", [])]
    errors = [r for r in rows if r.get("report_status") != 200]
    per_class = {}
    for cls in classes:
        lat = [r["latency_s"] for r in rows if r.get("class") == cls.name and "latency_s" in r]
        per_class[cls.name] = {
            "bytes": len(cls.template),
            "uploads": sum(1 for r in rows if r.get("class") == cls.name),
            "p50_s": _r(percentile(lat, 50)),
            "p99_s": _r(percentile(lat, 99)),
            "max_s": _r(max(lat) if lat else None),
        }
    total_bytes = sum(r.get("bytes", 0) for r in rows)
    return {
        "uploads": uploads,
        "clients": clients,
        "wall_seconds": round(wall, 1),
        "throughput_uploads_per_s": round(uploads / wall, 2),
        "throughput_mb_per_s": round(total_bytes / wall / 1e6, 1),
        "total_mb": round(total_bytes / 1e6, 1),
        "errors": len(errors),
        "error_examples": [
            {k: r.get(k) for k in ("class", "statuses", "job_status", "report_status")}
            for r in errors[:5]
        ],
        "status_counts": status_counts(statuses),
        "server_errors_5xx": count_5xx(status_counts(statuses)),
        "retries": sum(r.get("retries", 0) for r in rows),
        "latency_all_p50_s": _r(percentile([r["latency_s"] for r in rows if "latency_s" in r], 50)),
        "latency_all_p99_s": _r(percentile([r["latency_s"] for r in rows if "latency_s" in r], 99)),
        "per_class": per_class,
        "report_bytes_max": max((r.get("report_bytes", 0) for r in rows), default=0),
        "rss_peak_mib": {k: mib(v) for k, v in sampler.peak.items()},
    }


def run_isolated(stack: ProcessStack, cls: SizeClass, repeats: int) -> dict[str, Any]:
    """One client, one upload at a time: the plain upload-to-report latency of ``cls``."""
    lat, parts = [], []
    with httpx.Client() as client:
        for i in range(repeats):
            data = stamped(cls, 10_000_000 + i)
            row = _one_upload(client, stack.url, KEYS[1], data, raw=True, poll_s=0.02)
            if "latency_s" in row:
                lat.append(row["latency_s"])
                parts.append(
                    {"upload_s": round(row["upload_s"], 3), "latency_s": round(row["latency_s"], 3)}
                )
    return {"class": cls.name, "bytes": len(cls.template), "repeats": repeats, "p50_s": _r(percentile(lat, 50)),
            "min_s": _r(min(lat) if lat else None), "runs": parts}  # fmt: skip


def run_backpressure(stack: ProcessStack, quota: int, queue_cap: int) -> dict[str, Any]:
    small = peft_adapter(99)
    health_ms: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client() as c:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    c.get(f"{stack.url}/healthz", timeout=10)
                    health_ms.append((time.monotonic() - t) * 1e3)
                except httpx.HTTPError:
                    health_ms.append(10_000.0)
                time.sleep(0.05)

    def variant(n: int) -> bytes:
        buf = bytearray(small)
        at, _ = _stamp_offset(small)
        buf[at : at + 4] = struct.pack("<f", n / 1e6)
        return bytes(buf)

    def flood(key_index: int, count: int, start: int) -> list[tuple[int, str, str | None]]:
        def one(n: int) -> tuple[int, str, str | None]:
            with httpx.Client() as c:
                r = upload(c, stack.url, KEYS[key_index], variant(start + n), raw=True, timeout=60)
                kind = r.json().get("type", "").rsplit(":", 1)[-1] if r.status_code >= 400 else ""
                job = r.json().get("job_id") if r.status_code in (200, 202) else None
                return r.status_code, kind, job

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(count)))

    stack.pause_workers()
    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        t0 = time.monotonic()
        a = flood(0, quota * 2, 0)  # key 0 floods past its job quota
        b = flood(1, 5, 10_000)  # key 1 is not affected
        fill = [flood(k, quota, 20_000 * k) for k in (2, 3, 4)]  # the whole queue fills up
        flood_s = time.monotonic() - t0
        depth_health = httpx.get(f"{stack.url}/healthz", timeout=10).status_code
    finally:
        stack.resume_workers()
    accepted = [j for res in (a, b, *fill) for s, _, j in res if j]
    with httpx.Client() as client:
        keys_by_job = {}
        for k, res in ((0, a), (1, b), (2, fill[0]), (3, fill[1]), (4, fill[2])):
            for _, _, j in res:
                if j:
                    keys_by_job[j] = k
        outcomes = [
            wait_job(client, stack.url, KEYS[keys_by_job[j]], j, timeout_s=300)["status"]
            for j in accepted
        ]
    stop.set()
    prober.join()
    kinds = lambda res: status_counts([f"{s} {k}".strip() for s, k, _ in res])  # noqa: E731
    return {
        "per_key_quota": quota,
        "queue_cap": queue_cap,
        "flooding_key": kinds(a),
        "other_key": kinds(b),
        "queue_fill_keys": kinds([x for res in fill for x in res]),
        "flood_seconds": round(flood_s, 2),
        "health_during_flood_ms": {
            "requests": len(health_ms),
            "p50": _r(percentile(health_ms, 50), 1),
            "p99": _r(percentile(health_ms, 99), 1),
            "max": _r(max(health_ms) if health_ms else None, 1),
        },
        "health_status_at_full_queue": depth_health,
        "other_key_unaffected": all(s == 202 for s, _, _ in b),
        "accepted": len(accepted),
        "accepted_finished_after_resume": sum(1 for o in outcomes if o == "finished"),
        "lost": sum(1 for o in outcomes if o != "finished"),
        "server_errors_5xx": sum(1 for res in (a, b, *fill) for s, _, _ in res if s >= 500),
    }


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def run(
    root: Path,
    *,
    uploads: int,
    clients: int,
    workers: int,
    isolated_repeats: int,
    with_largest: bool = True,
    backpressure: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    classes = size_classes(with_largest=with_largest)
    floors = {c.name: floor_seconds(stamped(c, 0)) for c in classes}
    log(f"load: floors {floors}")
    out: dict[str, Any] = {"floors": floors}
    with ProcessStack(root / "load", suite_config(workers=workers)) as stack:
        stack.wait_workers_registered()
        out["rss_before_mib"] = {k: mib(v) for k, v in stack.rss().items()}
        if with_largest and isolated_repeats:
            out["isolated"] = run_isolated(stack, classes[-1], isolated_repeats)
            iso = out["isolated"]
            floor = floors[classes[-1].name]["hash_parse_s"]
            iso["floor_s"] = round(floor, 3)
            iso["ratio_to_floor"] = _r(iso["p50_s"] / floor, 2) if iso["p50_s"] else None
            iso["goal_3x_met"] = bool(iso["p50_s"] and iso["p50_s"] <= 3 * floor)
            log(f"load: isolated {iso}")
        out["load"] = run_load(stack, classes, uploads, clients)
        for name, row in out["load"]["per_class"].items():
            f = floors[name]["hash_parse_s"]
            row["floor_s"] = round(f, 4)
            row["p50_ratio_to_floor"] = _r(row["p50_s"] / f, 1) if row["p50_s"] else None
        out["rss_after_mib"] = {k: mib(v) for k, v in stack.rss().items()}
        out["crashes"] = stack.crashed()
    if backpressure:
        quota, cap = 20, 60
        cfg = suite_config(workers=1, api_env={"LORAVET_API_MAX_ACTIVE_JOBS_PER_KEY": str(quota),
                                              "LORAVET_API_MAX_QUEUE_DEPTH": str(cap)})  # fmt: skip
        with ProcessStack(root / "backpressure", cfg) as stack:
            stack.wait_workers_registered()
            out["backpressure"] = run_backpressure(stack, quota, cap)
            out["backpressure"]["crashes"] = stack.crashed()
    return out
