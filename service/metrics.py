"""Prometheus metrics at ``/metrics``.

Upload outcomes are counted in this process. Everything that happens in workers (job latency,
webhook deliveries) is counted by the workers in Redis and read at scrape time, together with queue
depth and jobs per status from RQ's registries, so one scrape of any API replica shows the whole
system and nothing is lost when a worker restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import (
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.serializers import JSONSerializer

from core import redis_model
from core.contracts import VET_QUEUE, WEBHOOK_QUEUE
from core.redis_model import JOB_LATENCY_BUCKETS

log = logging.getLogger("loravet.api")


class RedisSideCollector(Collector):
    """Reads queue state and worker-side counters from Redis at scrape time."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._collect()
        except RedisError:
            log.warning("metrics: Redis unreachable", exc_info=True)

    def _collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "loravet_queue_depth", "Jobs waiting in a queue", labels=["queue"]
        )
        jobs = GaugeMetricFamily(
            "loravet_jobs", "Vetting jobs by status (RQ registries)", labels=["status"]
        )
        for name in (VET_QUEUE, WEBHOOK_QUEUE):
            q = Queue(name, connection=self.redis, serializer=JSONSerializer)
            depth.add_metric([name], q.count)
            if name == VET_QUEUE:
                jobs.add_metric(["queued"], q.count)
                # cleanup=False: scraping must never change job state
                for status, registry in (
                    ("running", StartedJobRegistry(queue=q)),
                    ("scheduled", ScheduledJobRegistry(queue=q)),
                    ("finished", FinishedJobRegistry(queue=q)),
                    ("failed", FailedJobRegistry(queue=q)),
                ):
                    jobs.add_metric([status], registry.get_job_count(cleanup=False))
        yield depth
        yield jobs

        raw = redis_model.job_latency_histogram(self.redis)
        count = int(raw.get("count", 0))
        buckets = [(f"{b:g}", float(raw.get(f"le_{b:g}", 0))) for b in JOB_LATENCY_BUCKETS]
        buckets.append(("+Inf", float(count)))
        hist = HistogramMetricFamily(
            "loravet_job_latency_seconds", "Upload to report (or final failure), seconds"
        )
        hist.add_metric([], buckets, sum_value=float(raw.get("sum", 0.0)))
        yield hist

        deliveries = CounterMetricFamily(
            "loravet_webhook_deliveries", "Webhook delivery attempts by outcome", labels=["outcome"]
        )
        for outcome, n in redis_model.delivery_outcomes(self.redis).items():
            deliveries.add_metric([outcome], n)
        yield deliveries


class ServiceMetrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self, redis: Redis) -> None:
        self.registry = CollectorRegistry()
        self.uploads = Counter(
            "loravet_uploads",
            "Adapter uploads by outcome",
            labelnames=["outcome"],
            registry=self.registry,
        )
        self.registry.register(RedisSideCollector(redis))
