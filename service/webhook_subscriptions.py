"""Webhook subscriptions per API key, kept in Redis where the workers read them.

The URL is checked when the subscription is made (shape, scheme, IP literals against the address
policy); names are resolved and checked again by the worker on every attempt, on the address it
connects to. The signing secret is returned once, at creation, and never shown again.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from redis import Redis

from service.auth import ApiKey
from service.error_handlers import Problem
from service.settings import ApiSettings
from workers.contracts import (
    DeliveryLogEntry,
    EventType,
    RedisKeys,
    SubscriptionRecord,
)
from workers.webhook_security import CallbackAddressError, check_callback_url, new_webhook_secret


def create_subscription(
    redis: Redis, settings: ApiSettings, key: ApiKey, url: str, events: list[EventType]
) -> SubscriptionRecord:
    try:
        url = check_callback_url(url, allow_private=settings.allow_private_webhooks)
    except CallbackAddressError as exc:
        raise Problem(422, "Invalid webhook URL", str(exc), kind="invalid_webhook_url") from None
    owned = RedisKeys.key_subscriptions.format(key_id=key.key_id)
    if int(redis.scard(owned)) >= settings.max_webhooks_per_key:  # type: ignore[arg-type]
        raise Problem(
            409, "Too many webhooks", f"this API key already has {settings.max_webhooks_per_key} webhook subscriptions, "
            "its limit; delete one first", kind="webhook_limit",
        )  # fmt: skip
    record = SubscriptionRecord(
        id="whs_" + secrets.token_hex(12),
        key_id=key.key_id,
        url=url,
        events=sorted(set(events)),  # type: ignore[arg-type]
        created_at=datetime.now(UTC),
        secret=new_webhook_secret(),
    )
    with redis.pipeline() as p:
        p.hset(RedisKeys.subscription.format(sub_id=record.id), mapping=record.to_redis())
        p.sadd(owned, record.id)
        p.execute()
    return record


def get_subscription(redis: Redis, key: ApiKey, sub_id: str) -> SubscriptionRecord:
    """The key's own subscription, or 404 (another key's subscription is indistinguishable from none)."""
    raw = (
        redis.hgetall(RedisKeys.subscription.format(sub_id=sub_id))
        if sub_id.startswith("whs_")
        else {}
    )
    record = SubscriptionRecord.from_redis(raw) if raw else None  # type: ignore[arg-type]
    if record is None or record.key_id != key.key_id:
        raise Problem(
            404,
            "Not found",
            f"no webhook subscription {sub_id!r} for this API key",
            kind="webhook_not_found",
        )
    return record


def list_subscriptions(redis: Redis, key: ApiKey) -> list[SubscriptionRecord]:
    out = []
    for raw_id in sorted(redis.smembers(RedisKeys.key_subscriptions.format(key_id=key.key_id))):  # type: ignore[union-attr]
        raw = redis.hgetall(RedisKeys.subscription.format(sub_id=raw_id.decode()))
        if raw:
            out.append(SubscriptionRecord.from_redis(raw))  # type: ignore[arg-type]
    return out


def delete_subscription(redis: Redis, key: ApiKey, sub_id: str) -> None:
    record = get_subscription(redis, key, sub_id)
    with redis.pipeline() as p:
        p.delete(RedisKeys.subscription.format(sub_id=record.id))
        p.delete(RedisKeys.deliveries.format(sub_id=record.id))
        p.srem(RedisKeys.key_subscriptions.format(key_id=key.key_id), record.id)
        p.execute()


def delivery_log(redis: Redis, key: ApiKey, sub_id: str, limit: int) -> list[DeliveryLogEntry]:
    record = get_subscription(redis, key, sub_id)
    raw = redis.lrange(RedisKeys.deliveries.format(sub_id=record.id), 0, max(0, limit - 1))
    return [DeliveryLogEntry.model_validate_json(r) for r in raw]  # type: ignore[union-attr]
