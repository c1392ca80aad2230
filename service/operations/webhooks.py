"""Webhook subscriptions per API key, kept in Redis where the workers read them.

The URL is checked when the subscription is made (shape, scheme, IP literals against the address
policy); names are resolved and checked again by the worker on every attempt, on the address it
connects to. The signing secret is returned once, at creation, and never shown again.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from redis import Redis

from core import redis_model
from core.contracts import (
    DeliveryLogEntry,
    EventType,
    SubscriptionRecord,
)
from core.webhook_security import CallbackAddressError, check_callback_url, new_webhook_secret
from service.auth import ApiKey
from service.error_handlers import Problem
from service.settings import ApiSettings


def create_subscription(
    redis: Redis, settings: ApiSettings, key: ApiKey, url: str, events: list[EventType]
) -> SubscriptionRecord:
    try:
        url = check_callback_url(url, allow_private=settings.allow_private_webhooks)
    except CallbackAddressError as exc:
        raise Problem(422, "Invalid webhook URL", str(exc), kind="invalid_webhook_url") from None
    if redis_model.subscription_count(redis, key.key_id) >= settings.max_webhooks_per_key:
        raise Problem(
            409, "Too many webhooks", f"this API key already has {settings.max_webhooks_per_key} webhook subscriptions, "
            "its limit; delete one first", kind="webhook_limit",
        )  # fmt: skip
    record = SubscriptionRecord(
        id="whs_" + secrets.token_hex(12),
        key_id=key.key_id,
        url=url,
        events=sorted(set(events)),
        created_at=datetime.now(UTC),
        secret=new_webhook_secret(),
    )
    redis_model.save_subscription(redis, record)
    return record


def get_subscription(redis: Redis, key: ApiKey, sub_id: str) -> SubscriptionRecord:
    """The key's own subscription, or 404 (another key's subscription is indistinguishable from none)."""
    record = redis_model.load_subscription(redis, sub_id) if sub_id.startswith("whs_") else None
    if record is None or record.key_id != key.key_id:
        raise Problem(
            404,
            "Not found",
            f"no webhook subscription {sub_id!r} for this API key",
            kind="webhook_not_found",
        )
    return record


def list_subscriptions(redis: Redis, key: ApiKey) -> list[SubscriptionRecord]:
    return redis_model.subscriptions_of(redis, key.key_id)


def delete_subscription(redis: Redis, key: ApiKey, sub_id: str) -> None:
    record = get_subscription(redis, key, sub_id)
    redis_model.delete_subscription(redis, record)


def delivery_log(redis: Redis, key: ApiKey, sub_id: str, limit: int) -> list[DeliveryLogEntry]:
    record = get_subscription(redis, key, sub_id)
    return redis_model.deliveries(redis, record.id, limit)
