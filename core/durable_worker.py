"""``DurableWorker``: an RQ ``SimpleWorker`` that loses no job when it is SIGKILLed, for every
long-lived loravet worker (vetting workers, zoo build workers).

Why not RQ's workers as they are: RQ's forking ``Worker`` reloads everything per job (predictors,
a base model) and cannot use CUDA in the child; its ``SimpleWorker`` keeps state but sends no
heartbeat while a job runs, so a job of a dead worker is declared abandoned only after the whole
job timeout (minutes for a zoo LoRA). This class adds, once for every worker type:

* **Heartbeats during work.** A thread refreshes the worker, execution and job heartbeats every
  ``execution_ttl_s / 3``; a worker that dies (even by SIGKILL) leaves executions that expire after
  ``execution_ttl_s``, and the next maintenance pass of any live worker retries them (RQ's
  ``StartedJobRegistry.cleanup`` + the job's ``Retry``).
* **No job in limbo.** Every dequeue moves the job id into the queue's intermediate list first, also
  when serving several queues (RQ only does that for one), so a job popped by a worker that dies
  before starting it is recovered too.
* **A short cleaning lock** and **restart under the same name** after a crash (see the methods).

Torch-free: only rq and redis, so the zoo and the vetting workers share it from ``core``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis import Redis
from rq import Queue, SimpleWorker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from core.content_store import ContentStoreSettings
from core.redis_model import RedisUrl

log = logging.getLogger("loravet.worker")

IDLE_POLL_S = 1
"""While idle, the worker blocks this long on the first queue between polls of the others."""


class DurableWorkerSettings(BaseSettings, ContentStoreSettings):
    """What every durable worker reads from ``LORAVET_WORKER_*`` (or a ``.env``): Redis, the
    content store, its name, heartbeats and logging. The vetting and zoo workers extend it, so
    one host configured for either serves both."""

    model_config = SettingsConfigDict(env_prefix="LORAVET_WORKER_", env_file=".env", extra="ignore")

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    name: str | None = None
    """Worker name in Redis (default: host and pid)."""

    execution_ttl_s: int = Field(default=60, ge=2)
    """A running job whose worker sent no heartbeat for this long is abandoned and retried elsewhere."""

    maintenance_interval_s: int = Field(default=30, ge=1)
    """How often the worker looks for abandoned jobs and stale queue entries."""

    log_level: str = "INFO"


class DurableQueue(Queue):
    """A ``Queue`` whose multi-queue dequeue also goes through each queue's intermediate list, and
    whose registry-cleaning lock outlives a dead cleaner by seconds, not RQ's 15 minutes."""

    maintenance_lock_ttl_s: int = 60
    """Set by the worker to twice its maintenance interval (at least 5 s)."""

    def acquire_maintenance_lock(self) -> bool:
        """Take the lock that lets one worker at a time clean this queue's registries.

        RQ sets it for 899 s and deletes it when cleaning ends. A worker SIGKILLed while cleaning
        (likely in a crash loop: a restarted worker cleans first thing) left it for 15 minutes, and
        meanwhile no worker recovered abandoned jobs: the reliability suite found 40 of 73 jobs
        stuck as "running" that way. Cleaning takes milliseconds, so a short lock loses nothing.
        """
        return bool(
            self.connection.set(
                self.registry_cleaning_key, 1, nx=True, ex=self.maintenance_lock_ttl_s
            )
        )

    @classmethod
    def dequeue_any(  # type: ignore[override]  # RQ's signature, with our DurableQueue in it
        cls,
        queues: Sequence[Queue],
        timeout: int | None,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> tuple[Job, Queue] | None:
        queues = list(queues)
        if len(queues) <= 1:
            return super().dequeue_any(
                queues, timeout, connection, job_class, serializer, death_penalty_class
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for queue in queues:
                while (found := cls.lmove(connection, queue.key, None)) is not None:
                    job = cls._fetch(
                        connection, queue, found[1], job_class, serializer, death_penalty_class
                    )
                    if job is not None:
                        return job
            if deadline is None:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DequeueTimeout(timeout, [q.key for q in queues])
            try:
                found = cls.lmove(
                    connection, queues[0].key, max(1, min(IDLE_POLL_S, int(remaining)))
                )
            except DequeueTimeout:
                continue
            if found is not None:
                job = cls._fetch(
                    connection, queues[0], found[1], job_class, serializer, death_penalty_class
                )
                if job is not None:
                    return job

    @classmethod
    def _fetch(
        cls,
        connection: Redis,
        queue: Queue,
        raw_id: Any,
        job_class: Any,
        serializer: Any,
        death_penalty_class: Any,
    ) -> tuple[Job, Queue] | None:
        job_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        q = cls(
            queue.name,
            connection=connection,
            job_class=job_class,
            serializer=serializer,
            death_penalty_class=death_penalty_class,
        )
        try:
            return q.job_class.fetch(job_id, connection=connection, serializer=serializer), q
        except NoSuchJobError:
            return None  # RQ's intermediate-queue cleanup drops the id


class DurableWorker(SimpleWorker):
    """A resident worker (no fork per job) whose jobs survive its death. JSON job arguments only."""

    queue_class = DurableQueue

    def __init__(
        self,
        queues: Sequence[str],
        *,
        connection: Redis,
        name: str | None,
        execution_ttl_s: int,
        maintenance_interval_s: int,
        **kwargs: Any,
    ) -> None:
        self.execution_ttl_s = execution_ttl_s
        super().__init__(
            list(queues),
            name=name,
            connection=connection,
            serializer=JSONSerializer,
            worker_ttl=max(30, 2 * maintenance_interval_s),
            maintenance_interval=maintenance_interval_s,
            **kwargs,
        )
        for queue in self.queues:  # an attribute of our DurableQueue, not of RQ's Queue type
            queue.maintenance_lock_ttl_s = max(5, 2 * maintenance_interval_s)  # type: ignore[attr-defined]

    # -- liveness -------------------------------------------------------------------------
    @property
    def dequeue_timeout(self) -> int:
        """Never block longer than the maintenance interval: an idle worker must still find abandoned jobs."""
        return max(1, min(self.worker_ttl - 15, self.maintenance_interval))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.execution_ttl_s

    def register_birth(self) -> None:
        self._clear_stale_registration()
        super().register_birth()

    def _clear_stale_registration(self) -> None:
        """Take over a registration under our name left by a dead process on this host.

        RQ refuses to start a worker whose name is registered without a death mark, until that
        registration expires (``worker_ttl + 60`` s). A worker restarted after SIGKILL or an OOM kill
        under the same name (a container restart keeps host name and pid) would exit in a loop until
        then. A registration from this host whose pid is ours or no longer runs is stale: it is
        marked dead and replaced. Another host's, or a live process's, is left alone (RQ refuses).
        """
        raw = self.connection.hmget(self.key, ["hostname", "pid", "death"])
        host, pid, death = (v.decode() if isinstance(v, bytes) else v for v in raw)
        if death is not None or host is None or pid is None or host != socket.gethostname():
            return
        try:
            old_pid = int(pid)
        except ValueError:
            return
        if old_pid != os.getpid() and pid_alive(old_pid):
            return
        log.warning(
            "worker %s: the process registered under this name before (pid %s) died without "
            "deregistering; taking its place",
            self.name,
            old_pid,
        )
        self.connection.hset(self.key, "death", datetime.now(UTC).isoformat())

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        # every dequeue went through the intermediate list (DurableQueue), so always take it out
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    @contextlib.contextmanager
    def keep_alive(self, running: list[tuple[Job, Queue, Execution]]) -> Iterator[None]:
        """Heartbeats for ``running`` jobs from a thread while the body works on them."""
        stop = threading.Event()
        interval = max(0.5, self.execution_ttl_s / 3)

        def beat() -> None:
            while not stop.wait(interval):
                for job, _, execution in running:
                    if execution.id not in self.executions:
                        continue
                    try:
                        self.maintain_heartbeats(job, execution)
                    except Exception:
                        log.warning("heartbeat for job %s failed", job.id, exc_info=True)

        thread = threading.Thread(target=beat, name="loravet-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def execute_job(self, job: Job, queue: Queue) -> None:
        """One job at a time, with heartbeats while it runs (subclasses batch)."""
        execution = self.prepare_execution(job)
        with self.keep_alive([(job, queue, execution)]):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
