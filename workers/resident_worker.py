"""``VettingWorker``: an RQ worker that keeps the predictors resident and batches vetting jobs.

It is a :class:`core.durable_worker.DurableWorker` (no fork per job, heartbeats while jobs run, no
job lost to a SIGKILL: see there) with two additions:

* **Batching.** After dequeuing one vetting job it takes up to ``batch_size - 1`` more without
  blocking, marks them all started, computes every report in one pass (one forward pass per
  predictor and base model), then lets RQ finish each job through its normal ``perform_job`` (the
  job function only picks up its precomputed outcome), so statuses, results, retries and failure
  callbacks are RQ's own, job by job.
* **Predictors published.** What it loaded is announced in Redis for ``GET /v1/predictors`` while
  it lives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rq import Queue
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.worker import WorkerStatus

from core import redis_model
from core.contracts import VET_FUNCTION, VET_QUEUE, VetJobArgs
from core.durable_worker import DurableWorker
from workers.worker_runtime import WorkerRuntime

log = logging.getLogger("loravet.worker")


class VettingWorker(DurableWorker):
    """The resident, batching worker. Build it with a :class:`WorkerRuntime`; call ``work()``."""

    def __init__(
        self, runtime: WorkerRuntime, queues: Sequence[str] | None = None, **kwargs: Any
    ) -> None:
        s = runtime.settings
        self.runtime = runtime
        super().__init__(
            list(queues or s.queues),
            connection=runtime.redis,
            name=runtime.name,
            execution_ttl_s=s.execution_ttl_s,
            maintenance_interval_s=s.maintenance_interval_s,
            **kwargs,
        )

    def register_birth(self) -> None:
        super().register_birth()
        redis_model.publish_predictors(
            self.connection, self.name, self.runtime.predictor_infos(), self.worker_ttl + 60
        )

    def register_death(self) -> None:
        redis_model.withdraw_predictors(self.connection, self.name)
        super().register_death()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        super().heartbeat(timeout, pipeline)
        conn = pipeline if pipeline is not None else self.connection
        redis_model.renew_predictors(conn, self.name, timeout or self.worker_ttl + 60)

    # -- execution ------------------------------------------------------------------------
    def execute_job(self, job: Job, queue: Queue) -> None:
        batch = [(job, queue)]
        if _is_vetting(job, queue):
            batch += self._take_more(queue, self.runtime.settings.batch_size - 1)
        running = [(j, q, self.prepare_execution(j)) for j, q in batch]
        with self.keep_alive(running):
            vetting = [(j, q, e) for j, q, e in running if _is_vetting(j, q)]
            if vetting:
                for j, _, _ in vetting:
                    self.prepare_job_execution(j)  # all of the batch shows as running now
                self._precompute([j for j, _, _ in vetting])
            for j, q, e in running:
                self.perform_job(j, q, e)
        self.set_state(WorkerStatus.IDLE)

    def _take_more(self, queue: Queue, count: int) -> list[tuple[Job, Queue]]:
        more: list[tuple[Job, Queue]] = []
        while len(more) < count:
            found = self.queue_class.dequeue_any(
                [queue],
                None,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
            )
            if found is None:
                break
            more.append(found)
        if more:
            log.info("batching %d vetting jobs", len(more) + 1)
        return more

    def _precompute(self, jobs: list[Job]) -> None:
        """One pass over the batch; each job's outcome (report or exception) is parked for its job function."""
        outcomes: dict[str, Any] = {}
        valid: list[tuple[Job, VetJobArgs]] = []
        for job in jobs:
            try:
                valid.append((job, VetJobArgs.model_validate(job.args[0])))
            except (ValueError, IndexError, TypeError):
                continue  # the job function refuses it with the reason
        timeout = max((j.timeout or Queue.DEFAULT_TIMEOUT) for j in jobs)
        try:
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=jobs[0].id):
                results = self.runtime.vet([a for _, a in valid])
        except Exception as exc:  # timeout, store or device fault: every job of the batch retries
            log.exception("batch of %d vetting jobs failed", len(valid))
            results = [exc] * len(valid)
        for (job, _), result in zip(valid, results, strict=True):
            outcomes[job.id] = result
        self.runtime.park_outcomes(outcomes)


def _is_vetting(job: Job, queue: Queue) -> bool:
    return queue.name == VET_QUEUE and job.func_name == VET_FUNCTION
