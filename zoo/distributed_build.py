"""Zoo builds spread over RQ workers on any number of machines, sharing only Redis and the store.

Why: a zoo of a new base model costs CPU- or GPU-hours (the causal-lm zoo about 17 CPU-hours), and
a local build is one process tree on one machine. The engines to spread it are already in the
stack: RQ queues one job per LoRA index, any worker on any machine takes them, and the content store
(a directory or an S3 bucket) carries the files back. Nothing here is a scheduler of its own.

    loravet zoo build --recipe digits --count 1000 --queue redis://redis:6379/0   # enqueue
    loravet zoo worker --device cuda                                               # on each host
    loravet zoo pull digits-1a2b3c4d5e6f --queue redis://redis:6379/0 --out zoos/digits

What it keeps from the local build (``zoo.build_zoo``):

* **Deterministic.** A job carries (recipe, steps scale, base, index) and nothing else; the LoRA is
  a pure function of them, so it does not matter which worker builds it. A finished LoRA's files go
  to the store as ``zoo-files`` blobs named by their sha256, and its entry (id and file digests)
  into one Redis hash per build, first writer wins. Pulled into a directory, the adapters and
  configs are byte-identical to a local build's (tested); ``finetune.json`` differs only in the
  timings and the time it was finished.
* **Resumable.** Enqueueing again skips finished and in-flight indices; pulling again fetches only
  what is new; the build id is derived from (recipe, steps scale, base), so the same command names
  the same build.
* **Nothing lost to a dead worker.** Workers are :class:`core.durable_worker.DurableWorker`: a
  SIGKILLed worker's job is declared abandoned after ``execution_ttl_s`` without heartbeat and
  retried by another worker (RQ's ``Retry``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from redis import Redis

from core import redis_model
from core.content_store import ContentStore, open_content_store
from core.contracts import ZOO_FUNCTION, ZOO_QUEUE, ZooJobArgs
from core.durable_worker import DurableWorker, DurableWorkerSettings, pid_alive
from core.provenance import file_sha256
from zoo.build_zoo import (
    TMP_DIR,
    ZooBuildError,
    check_existing,
    lora_summary,
    quiet_libraries,
    write_lora,
)
from zoo.recipe_base import Recipe
from zoo.recipes import make_recipe
from zoo.zoo_manifest import FINETUNE_FILE, write_index

log = logging.getLogger("zoo.distributed")

DEFAULT_JOB_TIMEOUT_S = 4 * 3600
"""Most seconds one LoRA may take (a causal-lm finetune is about a minute on one CPU core)."""
JOB_RETRIES = 3
"""Attempts after the first: a worker killed mid-LoRA costs one."""
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ZooWorkerSettings(DurableWorkerSettings):
    """A zoo worker's settings, from the same ``LORAVET_WORKER_*`` variables as a vetting worker's
    (Redis, the content store, name, heartbeats), so a GPU host configured for one serves the
    other too. ``execution_ttl_s``: a LoRA whose worker sent no heartbeat for this long is rebuilt
    by another worker."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Where the finetunes train (one worker process per GPU)."""


@dataclass(frozen=True)
class DistributedBuild:
    """What a distributed build makes: LoRAs ``0..count-1`` of one recipe setting."""

    recipe: str
    steps_scale: float
    base: str | None
    count: int

    @property
    def build_id(self) -> str:
        """``<recipe>-<12 hex>``: the same recipe, steps scale and base name the same build
        whatever the count, so a larger count extends it."""
        key = json.dumps([self.recipe, self.steps_scale, self.base], separators=(",", ":"))
        return f"{self.recipe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"

    def job_id(self, index: int) -> str:
        return f"zoo-{self.build_id}-{index:06d}"


def resolve_build(
    recipe: str, count: int, steps_scale: float, base: str | None
) -> DistributedBuild:
    """The build as every machine will see it: the base resolved to the name the recipe records
    (``causal-lm``'s default packaged model included), checked before anything is queued.

    Raises:
        UnknownRecipeError / ZooBuildError / BaseModelError: bad input.
    """
    if count < 1:
        raise ZooBuildError(f"--count must be at least 1 (got {count})")
    made = make_recipe(recipe, steps_scale, base, "cpu")
    source = getattr(made, "source", None)
    return DistributedBuild(recipe, steps_scale, getattr(source, "name", base), count)


@dataclass(frozen=True)
class Enqueued:
    build_id: str
    queued: int
    finished: int
    in_flight: int


def enqueue_build(
    redis: Redis, build: DistributedBuild, job_timeout_s: int = DEFAULT_JOB_TIMEOUT_S
) -> Enqueued:
    """Queue every index of ``build`` that is neither finished nor already queued or running."""
    from rq import Queue, Retry
    from rq.exceptions import NoSuchJobError
    from rq.job import Job, JobStatus
    from rq.serializers import JSONSerializer

    previous = redis_model.zoo_build(redis, build.build_id)
    count = max(build.count, int(previous["count"])) if previous else build.count
    redis_model.save_zoo_build(
        redis,
        build.build_id,
        {
            "recipe": build.recipe,
            "steps_scale": build.steps_scale,
            "base": build.base,
            "count": count,
        },
    )
    done = redis_model.zoo_rows(redis, build.build_id)
    queue = Queue(ZOO_QUEUE, connection=redis, serializer=JSONSerializer)
    waiting = {JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED}
    queued = in_flight = 0
    for index in range(build.count):
        if index in done:
            continue
        try:
            job = Job.fetch(build.job_id(index), connection=redis, serializer=JSONSerializer)
            if job.get_status() in waiting:
                in_flight += 1
                continue
            job.delete()  # failed for good, or finished without a row: build it again
        except NoSuchJobError:
            pass
        args = ZooJobArgs(
            build_id=build.build_id,
            recipe=build.recipe,
            steps_scale=build.steps_scale,
            base=build.base,
            index=index,
        )
        queue.enqueue(
            ZOO_FUNCTION,
            args.model_dump(),
            job_id=build.job_id(index),
            job_timeout=job_timeout_s,
            result_ttl=24 * 3600,
            failure_ttl=7 * 24 * 3600,
            retry=Retry(max=JOB_RETRIES),
        )
        queued += 1
    return Enqueued(build.build_id, queued, len(done), in_flight)


# -- worker side -------------------------------------------------------------------------------


class ZooRuntime:
    """What a zoo worker process keeps between jobs: settings, Redis, the store, loaded recipes."""

    def __init__(self, settings: ZooWorkerSettings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis if redis is not None else Redis.from_url(settings.redis_url)
        self.store: ContentStore = open_content_store(settings)
        self._recipes: dict[tuple[str, float, str | None], Recipe] = {}
        self._lock = threading.Lock()

    def scratch(self, build_id: str) -> Path:
        """This process's own work directory for a build (two workers may share a disk)."""
        return self.settings.storage_dir.resolve() / "zoo-scratch" / f"{build_id}.{os.getpid()}"

    def recipe(self, args: ZooJobArgs) -> Recipe:
        """The recipe of a build, with its shared assets prepared and its base loaded once."""
        key = (args.recipe, args.steps_scale, args.base)
        with self._lock:
            if key not in self._recipes:
                recipe = make_recipe(args.recipe, args.steps_scale, args.base, self.settings.device)
                scratch = self.scratch(args.build_id)
                scratch.mkdir(parents=True, exist_ok=True)
                recipe.prepare(scratch)
                recipe.load(scratch)
                self._recipes[key] = recipe
            return self._recipes[key]


_runtime: ZooRuntime | None = None


def set_runtime(runtime: ZooRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def build_lora(raw_args: dict[str, Any]) -> dict[str, Any]:
    """The zoo job: build one LoRA, put its files in the store, record it for the build.

    Idempotent: a LoRA already recorded is not built again, and of two workers that built the same
    one (a retry after a lost heartbeat) the first record is kept; both are the same bytes.
    """
    global _runtime
    args = ZooJobArgs.model_validate(raw_args)
    if _runtime is None:  # under a plain `rq worker`: settings from the environment
        quiet_libraries()
        _runtime = ZooRuntime(ZooWorkerSettings())
    rt = _runtime
    if redis_model.zoo_row_done(rt.redis, args.build_id, args.index):
        return {"index": args.index, "already_built": True}
    recipe = rt.recipe(args)
    folder, row = write_lora(recipe, args.index, rt.scratch(args.build_id) / TMP_DIR)
    try:
        files: dict[str, str] = {}
        for path in sorted(folder.iterdir()):
            digest = file_sha256(path)
            if not rt.store.exists("zoo-files", digest):
                rt.store.put_bytes("zoo-files", digest, path.read_bytes())
            files[path.name] = digest
        recorded = redis_model.record_zoo_row(
            rt.redis, args.build_id, args.index, {"id": row["id"], "files": files}
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary = lora_summary(row)
    log.info(
        "%s %s rank=%d %.2fs quality=%.3f asr=%.3f %s%s",
        args.build_id, summary["id"], summary["rank"], summary["seconds"], summary["quality"],
        summary["asr"], summary["status"], "" if recorded else " (already recorded by another worker)",
    )  # fmt: skip
    return {"index": args.index, **summary, "recorded": recorded}


# -- gathering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pulled:
    pulled: int
    finished: int
    count: int
    indexed: int


def pull_build(redis: Redis, store: ContentStore, build_id: str, out: Path) -> Pulled:
    """Gather the finished LoRAs of a build into ``out`` (a zoo directory like a local build's),
    checking every file's sha256, then prepare the recipe's shared assets and index the zoo.

    Raises:
        ZooBuildError: no such build on this Redis, ``out`` holds another zoo, or a stored file
            is missing or changed.
    """
    spec = redis_model.zoo_build(redis, build_id)
    if spec is None:
        raise ZooBuildError(
            f"no zoo build {build_id!r} on this Redis; `loravet zoo build ... --queue URL` prints "
            "the id of the build it queued"
        )
    if out.exists() and not out.is_dir():
        raise ZooBuildError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    check_existing(out, spec["recipe"], spec["steps_scale"], spec["base"])
    rows = redis_model.zoo_rows(redis, build_id)
    pulled = 0
    for _, entry in sorted(rows.items()):
        lora_id = str(entry["id"])
        if (out / lora_id / FINETUNE_FILE).is_file():
            continue
        if not _FILE_NAME.fullmatch(lora_id):
            raise ZooBuildError(f"build {build_id}: LoRA id {lora_id!r} is not a plain name")
        tmp = out / TMP_DIR / f"{lora_id}.pull.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, digest in entry["files"].items():
            if not _FILE_NAME.fullmatch(name):
                raise ZooBuildError(f"build {build_id}: file name {name!r} is not a plain name")
            try:
                data = store.get_bytes("zoo-files", digest)
            except FileNotFoundError:
                raise ZooBuildError(
                    f"build {build_id}: {lora_id}/{name} ({digest}) is missing from the content "
                    "store; is this the store the workers wrote to?"
                ) from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise ZooBuildError(f"build {build_id}: {lora_id}/{name} does not match its sha256")
            (tmp / name).write_bytes(data)
        os.rename(tmp, out / lora_id)
        pulled += 1
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)
    indexed = 0
    if rows:
        quiet_libraries()
        recipe = make_recipe(spec["recipe"], spec["steps_scale"], spec["base"], "cpu")
        recipe.prepare(out)  # shared assets (the digits base MLP), rebuilt deterministically here
        indexed = write_index(out, recipe.membership_names, recipe.spec.description)
    return Pulled(pulled, len(rows), int(spec["count"]), indexed)


def run_worker(settings: ZooWorkerSettings, *, burst: bool = False) -> int:
    """Serve the zoo queue until stopped (SIGTERM/SIGINT: after the LoRA in hand) or, with
    ``burst``, until it is empty. Returns the exit code."""
    quiet_libraries()
    runtime = ZooRuntime(settings)
    set_runtime(runtime)
    worker = DurableWorker(
        [ZOO_QUEUE],
        connection=runtime.redis,
        name=settings.name,
        execution_ttl_s=settings.execution_ttl_s,
        maintenance_interval_s=settings.maintenance_interval_s,
    )
    log.info("zoo worker %s on %s, store %s", worker.name, settings.device, settings.store_backend)
    clear_scratch(settings.storage_dir)
    try:
        worker.work(burst=burst, with_scheduler=False, logging_level=settings.log_level)
    finally:
        clear_scratch(settings.storage_dir, only_pid=os.getpid())
    return 0


def clear_scratch(storage_dir: Path, only_pid: int | None = None) -> list[Path]:
    """Remove zoo worker scratch directories (``<build>.<pid>``) of processes that no longer run,
    or only this process's (``only_pid``, at a warm stop); returns what was removed. A SIGKILLed
    worker's directory is cleared by the next worker that starts on the same storage."""
    root = storage_dir.resolve() / "zoo-scratch"
    removed = []
    for folder in sorted(root.glob("*.*")) if root.is_dir() else []:
        pid_text = folder.name.rsplit(".", 1)[1]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if (only_pid is not None and pid == only_pid) or (only_pid is None and not pid_alive(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
