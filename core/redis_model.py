"""loravet's Redis data model: every key it writes, and the only code that reads or writes them.

RQ keeps its own keys under ``rq:``; these are loravet's, under ``loravet:``. The API and the workers
both call the functions here instead of formatting keys themselves, so one file says what each key
holds, who expires it and how long it lives, and a change of layout is one change.

Functions take a ``Redis`` client; those that must join a caller's transaction (the upload's WATCH on
the submission pointer) take a pipeline. redis-py types every command's result as "value or
awaitable"; this client is synchronous, so the casts below are the only place that says so.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

from pydantic import AfterValidator
from redis import Redis
from redis.client import Pipeline

from core.contracts import DeliveryLogEntry, PredictorInfo, Report, SubscriptionRecord

JOB_LATENCY_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (seconds, upload to report) of the job-latency histogram the workers keep in Redis."""

RECENT_REPORTS_KEPT = 10_000
"""Newest reports listed by the web pages (per index); older ones stay in the store, unlisted."""

DELIVERY_LOG_LENGTH = 200
"""Delivery-log entries kept per subscription (newest first)."""

EVENT_TTL_S = 14 * 24 * 3600
"""How long an event body is kept for its retries (longer than the whole retry schedule)."""

VERDICTS = ("accept", "review", "reject")


REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def check_redis_url(value: str) -> str:
    """A settings value that redis-py can connect with, checked when settings are read, so a
    mistyped URL is one ``error:`` line at start instead of a traceback from the client."""
    if not value.startswith(REDIS_URL_SCHEMES):
        raise ValueError(  # the value is not repeated: a Redis URL may hold a password
            "not a Redis URL; accepted: redis://[:password@]host:port/db, rediss:// (TLS) or "
            "unix:///path/to/socket"
        )
    return value


RedisUrl = Annotated[str, AfterValidator(check_redis_url)]
"""The type of every process's ``redis_url`` setting."""


class RedisKeys:
    """Every Redis key loravet itself writes (RQ keeps its own under ``rq:``)."""

    submission = "loravet:submission:{report_id}"  # -> job id of the vetting job for these bytes
    job_keys = "loravet:job:{job_id}:keys"  # set of API key ids that asked for this job
    job_failure = "loravet:job:{job_id}:failure"  # JSON {kind, reason} of a final failure
    key_active_jobs = "loravet:key:{key_id}:active"  # set of this key's unfinished job ids
    rate_window = "loravet:rate:{key_id}"  # sorted set of request times in the last minute
    predictors = "loravet:predictors:{worker}"  # JSON list of PredictorInfo, TTL = worker liveness
    subscription = "loravet:webhook:{sub_id}"  # hash: WebhookSubscription fields + secret
    key_subscriptions = "loravet:key:{key_id}:webhooks"  # set of subscription ids of one key
    deliveries = (
        "loravet:webhook:{sub_id}:deliveries"  # list of DeliveryLogEntry JSON, newest first
    )
    event = "loravet:event:{event_id}"  # the exact JSON body of a webhook event
    metric_job_latency = "loravet:metrics:job_latency"  # hash: bucket counters, sum, count
    metric_deliveries = "loravet:metrics:webhook_deliveries"  # hash: outcome -> count
    recent_reports = "loravet:reports:recent"  # sorted set: report id -> created_at (epoch s)
    recent_reports_by_verdict = "loravet:reports:recent:{verdict}"  # the same, one per verdict
    zoo_build = "loravet:zoo:{build_id}"  # JSON of the build (recipe, steps scale, base, count)
    zoo_rows = "loravet:zoo:{build_id}:rows"  # hash: LoRA index -> JSON {id, files: name -> sha256}


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _members(redis: Redis, key: str) -> list[str]:
    return sorted(_text(m) for m in cast(set[bytes], redis.smembers(key)))


# --- submissions: which job vets which content, and who asked -----------------------------------


def submission_key(report_id: str) -> str:
    """The pointer a submitting transaction WATCHes (``service.operations.jobs``)."""
    return RedisKeys.submission.format(report_id=report_id)


def submission_job(redis: Redis | Pipeline, report_id: str) -> str | None:
    """The id of the vetting job last enqueued for this content, if it has not expired."""
    raw = redis.get(submission_key(report_id))
    return None if raw is None else _text(raw)


def record_submission(pipe: Pipeline, report_id: str, job_id: str, key_id: str, ttl_s: int) -> None:
    """In the caller's transaction: point the content at its new job, note the asking key's interest
    and take one of that key's active-job slots."""
    pipe.set(submission_key(report_id), job_id, ex=ttl_s)
    pipe.sadd(RedisKeys.job_keys.format(job_id=job_id), key_id)
    pipe.expire(RedisKeys.job_keys.format(job_id=job_id), ttl_s)
    pipe.sadd(RedisKeys.key_active_jobs.format(key_id=key_id), job_id)


def note_interest(redis: Redis, job_id: str, key_id: str, ttl_s: int) -> None:
    """Remember that this key asked for this job: its webhooks hear about the result."""
    name = RedisKeys.job_keys.format(job_id=job_id)
    with redis.pipeline() as p:
        p.sadd(name, key_id)
        p.expire(name, ttl_s)
        p.execute()


def interested_keys(redis: Redis, job_id: str) -> list[str]:
    """The API key ids that asked for this job, sorted."""
    return _members(redis, RedisKeys.job_keys.format(job_id=job_id))


def active_job_count(redis: Redis, key_id: str) -> int:
    return int(redis.scard(RedisKeys.key_active_jobs.format(key_id=key_id)))


def active_jobs(redis: Redis, key_id: str) -> list[str]:
    return _members(redis, RedisKeys.key_active_jobs.format(key_id=key_id))


def release_active_job(redis: Redis, key_id: str, job_id: str) -> None:
    redis.srem(RedisKeys.key_active_jobs.format(key_id=key_id), job_id)


def finish_job(redis: Redis, job_id: str, elapsed_s: float) -> None:
    """A vetting job ended (report or final failure): free every asking key's slot and count its
    upload-to-end latency in the histogram ``/metrics`` serves."""
    keys = interested_keys(redis, job_id)
    with redis.pipeline() as p:
        for key_id in keys:
            p.srem(RedisKeys.key_active_jobs.format(key_id=key_id), job_id)
        for bound in JOB_LATENCY_BUCKETS:
            if elapsed_s <= bound:
                p.hincrby(RedisKeys.metric_job_latency, f"le_{bound:g}", 1)
        p.hincrby(RedisKeys.metric_job_latency, "count", 1)
        p.hincrbyfloat(RedisKeys.metric_job_latency, "sum", elapsed_s)
        p.execute()


def record_failure(redis: Redis, job_id: str, kind: str, reason: str, ttl_s: int) -> None:
    """The final failure of a vetting job, as the API reports it."""
    redis.set(
        RedisKeys.job_failure.format(job_id=job_id),
        json.dumps({"kind": kind, "reason": reason}),
        ex=ttl_s,
    )


def job_failure(redis: Redis, job_id: str) -> dict[str, str]:
    """``{kind, reason}`` of a job's final failure; empty when none was recorded."""
    raw = redis.get(RedisKeys.job_failure.format(job_id=job_id))
    return json.loads(cast(bytes, raw)) if raw else {}


# --- rate limiting --------------------------------------------------------------------------------


def rate_window(redis: Redis, key_id: str, now: float) -> tuple[int, float | None]:
    """Requests of this key in the minute before ``now`` (older ones dropped), and the oldest time."""
    window = RedisKeys.rate_window.format(key_id=key_id)
    with redis.pipeline() as p:
        p.zremrangebyscore(window, 0, now - 60)
        p.zcard(window)
        p.zrange(window, 0, 0, withscores=True)
        _, count, oldest = p.execute()
    return int(count), (float(oldest[0][1]) if oldest else None)


def count_request(redis: Redis, key_id: str, now: float, member: str) -> None:
    """Count one admitted request in this key's window (which expires a minute after the last)."""
    window = RedisKeys.rate_window.format(key_id=key_id)
    with redis.pipeline() as p:
        p.zadd(window, {member: now})
        p.expire(window, 61)
        p.execute()


# --- workers' predictors ---------------------------------------------------------------------------


def publish_predictors(
    redis: Redis | Pipeline, worker: str, infos: list[PredictorInfo], ttl_s: int
) -> None:
    """A worker's loaded predictors, living as long as the worker's heartbeat renews them."""
    redis.set(
        RedisKeys.predictors.format(worker=worker),
        json.dumps([i.model_dump(mode="json") for i in infos]),
        ex=ttl_s,
    )


def renew_predictors(redis: Redis | Pipeline, worker: str, ttl_s: int) -> None:
    redis.expire(RedisKeys.predictors.format(worker=worker), ttl_s)


def withdraw_predictors(redis: Redis, worker: str) -> None:
    redis.delete(RedisKeys.predictors.format(worker=worker))


def live_predictors(redis: Redis) -> tuple[int, list[PredictorInfo]]:
    """(number of live workers that published, their predictors without duplicates, first seen)."""
    found: dict[tuple[str, str], PredictorInfo] = {}
    workers = 0
    for name in redis.scan_iter(match=RedisKeys.predictors.format(worker="*"), count=100):
        raw = redis.get(name)
        if raw is None:
            continue
        workers += 1
        for row in json.loads(cast(bytes, raw)):
            info = PredictorInfo.model_validate(row)
            found.setdefault((info.predictor_id, info.version), info)
    return workers, list(found.values())


# --- webhook subscriptions, events and deliveries -----------------------------------------------


def subscription_count(redis: Redis, key_id: str) -> int:
    return int(redis.scard(RedisKeys.key_subscriptions.format(key_id=key_id)))


def save_subscription(redis: Redis, record: SubscriptionRecord) -> None:
    with redis.pipeline() as p:
        p.hset(
            RedisKeys.subscription.format(sub_id=record.id),
            mapping=cast(dict[Any, Any], record.to_redis()),  # redis-py: invariant key type
        )
        p.sadd(RedisKeys.key_subscriptions.format(key_id=record.key_id), record.id)
        p.execute()


def load_subscription(redis: Redis, sub_id: str) -> SubscriptionRecord | None:
    raw = cast(dict[bytes, bytes], redis.hgetall(RedisKeys.subscription.format(sub_id=sub_id)))
    return SubscriptionRecord.from_redis(raw) if raw else None


def subscriptions_of(redis: Redis, key_id: str) -> list[SubscriptionRecord]:
    """One key's subscriptions, by id."""
    found = (
        load_subscription(redis, sub_id)
        for sub_id in _members(redis, RedisKeys.key_subscriptions.format(key_id=key_id))
    )
    return [s for s in found if s is not None]


def delete_subscription(redis: Redis, record: SubscriptionRecord) -> None:
    """The subscription, its delivery log and its place in its key's set."""
    with redis.pipeline() as p:
        p.delete(RedisKeys.subscription.format(sub_id=record.id))
        p.delete(RedisKeys.deliveries.format(sub_id=record.id))
        p.srem(RedisKeys.key_subscriptions.format(key_id=record.key_id), record.id)
        p.execute()


def disable_subscription(redis: Redis, sub_id: str, reason: str) -> None:
    redis.hset(
        RedisKeys.subscription.format(sub_id=sub_id),
        mapping={"active": "0", "disabled_reason": reason},
    )


def store_event(redis: Redis, event_id: str, body: bytes) -> None:
    """An event's exact body, once (a re-emitted event keeps the first), for its retries."""
    redis.set(RedisKeys.event.format(event_id=event_id), body, nx=True, ex=EVENT_TTL_S)


def load_event(redis: Redis, event_id: str) -> bytes | None:
    return cast(bytes | None, redis.get(RedisKeys.event.format(event_id=event_id)))


def record_delivery(redis: Redis, sub_id: str, entry: DeliveryLogEntry) -> None:
    """Append to the subscription's delivery log (newest first, bounded) and count the outcome."""
    key = RedisKeys.deliveries.format(sub_id=sub_id)
    with redis.pipeline() as p:
        p.lpush(key, entry.model_dump_json())
        p.ltrim(key, 0, DELIVERY_LOG_LENGTH - 1)
        p.hincrby(RedisKeys.metric_deliveries, entry.outcome, 1)
        p.execute()


def deliveries(redis: Redis, sub_id: str, limit: int) -> list[DeliveryLogEntry]:
    """The newest ``limit`` delivery attempts of a subscription, newest first."""
    raw = cast(
        list[bytes], redis.lrange(RedisKeys.deliveries.format(sub_id=sub_id), 0, max(0, limit - 1))
    )
    return [DeliveryLogEntry.model_validate_json(r) for r in raw]


# --- counters for /metrics -------------------------------------------------------------------------


def job_latency_histogram(redis: Redis) -> dict[str, str]:
    """The workers' latency counters: ``le_<bound>``, ``count`` and ``sum`` (strings as stored)."""
    raw = cast(dict[bytes, bytes], redis.hgetall(RedisKeys.metric_job_latency))
    return {k.decode(): v.decode() for k, v in raw.items()}


def delivery_outcomes(redis: Redis) -> dict[str, float]:
    """Webhook delivery attempts by outcome."""
    raw = cast(dict[bytes, bytes], redis.hgetall(RedisKeys.metric_deliveries))
    return {k.decode(): float(v) for k, v in sorted(raw.items())}


# --- the recent-reports index the pages list ---------------------------------------------------------


def index_report(redis: Redis, report: Report) -> None:
    """List a stored report among the recent ones (all, and by verdict) for the web pages."""
    score = report.created_at.timestamp()
    with redis.pipeline() as p:
        for index in (
            RedisKeys.recent_reports,
            RedisKeys.recent_reports_by_verdict.format(verdict=report.verdict),
        ):
            p.zadd(index, {report.report_id: score})
            p.zremrangebyrank(index, 0, -RECENT_REPORTS_KEPT - 1)
        for verdict in VERDICTS:
            if verdict != report.verdict:  # a re-vetted report may have a new verdict
                p.zrem(
                    RedisKeys.recent_reports_by_verdict.format(verdict=verdict), report.report_id
                )
        p.execute()


def recent_reports(
    redis: Redis, verdict: str | None, start: int, count: int
) -> tuple[dict[str | None, int], list[str]]:
    """Counts of the recent-reports indexes (``None`` = all, then one per verdict) and the ids of
    the ``count`` newest from ``start`` in the one asked for (all when ``verdict`` is ``None``)."""
    index = (
        RedisKeys.recent_reports_by_verdict.format(verdict=verdict)
        if verdict
        else RedisKeys.recent_reports
    )
    with redis.pipeline() as p:
        p.zcard(RedisKeys.recent_reports)
        for v in VERDICTS:
            p.zcard(RedisKeys.recent_reports_by_verdict.format(verdict=v))
        p.zrevrange(index, start, start + count - 1)
        all_count, *verdict_counts, ids = p.execute()
    counts: dict[str | None, int] = {None: int(all_count)}
    counts.update({v: int(n) for v, n in zip(VERDICTS, verdict_counts, strict=True)})
    return counts, [_text(i) for i in ids]


# -- zoo builds spread over RQ workers (zoo.distributed_build) -------------------------------------
def save_zoo_build(redis: Redis, build_id: str, spec: dict[str, Any]) -> None:
    """Record (or widen: a larger ``count``) a distributed zoo build. Kept until deleted."""
    redis.set(RedisKeys.zoo_build.format(build_id=build_id), json.dumps(spec, sort_keys=True))


def zoo_build(redis: Redis, build_id: str) -> dict[str, Any] | None:
    raw = redis.get(RedisKeys.zoo_build.format(build_id=build_id))
    return None if raw is None else cast(dict[str, Any], json.loads(_text(raw)))


def record_zoo_row(redis: Redis, build_id: str, index: int, entry: dict[str, Any]) -> bool:
    """Record a finished LoRA of a build; False when another worker recorded it first (theirs is
    kept: a build is deterministic, so both are the same LoRA)."""
    key = RedisKeys.zoo_rows.format(build_id=build_id)
    return bool(redis.hsetnx(key, str(index), json.dumps(entry, sort_keys=True)))


def zoo_row_done(redis: Redis, build_id: str, index: int) -> bool:
    return bool(redis.hexists(RedisKeys.zoo_rows.format(build_id=build_id), str(index)))


def zoo_rows(redis: Redis, build_id: str) -> dict[int, dict[str, Any]]:
    """Every finished LoRA of a build: index -> {id, files}."""
    raw = cast(dict[Any, Any], redis.hgetall(RedisKeys.zoo_rows.format(build_id=build_id)))
    return {int(_text(k)): json.loads(_text(v)) for k, v in raw.items()}
