"""API-key authentication and per-key request rate limiting.

A key is sent as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Only sha256 digests of
keys are held; a presented key is hashed and looked up, so the plaintext is never compared, stored or
logged. The key's id (first 16 hex digits of its digest) names it in Redis keys, quotas and logs.

Rate limiting is a sliding one-minute window per key in Redis (shared by every API replica); past
the limit the answer is 429 with ``Retry-After`` set to when the oldest counted request leaves it.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

from fastapi import Request
from redis import Redis

from core import redis_model
from service.error_handlers import Problem
from service.settings import hash_api_key

KEY_ID_LENGTH = 16


@dataclass(frozen=True)
class ApiKey:
    """An authenticated caller: only the id of its key."""

    key_id: str


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def authenticate(request: Request, accepted_hashes: frozenset[str]) -> ApiKey:
    """Raise 401 unless the request carries an accepted key."""
    key = presented_key(request)
    if key is None:
        raise Problem(
            401,
            "Unauthorized",
            "this endpoint needs an API key: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`",
            kind="missing_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="loravet"'},
        )
    digest = hash_api_key(key)
    if digest not in accepted_hashes:
        raise Problem(
            401,
            "Unauthorized",
            "the API key is not valid; ask the operator of this loravet instance for a key",
            kind="invalid_api_key",
            headers={"WWW-Authenticate": 'Bearer realm="loravet", error="invalid_token"'},
        )
    return ApiKey(key_id=digest[:KEY_ID_LENGTH])


def enforce_rate_limit(
    redis: Redis, key: ApiKey, per_minute: int, *, now: float | None = None
) -> None:
    """Count this request in the key's last 60 seconds; raise 429 past ``per_minute``.

    A sliding window (a sorted set of request times), so a burst across a minute boundary cannot
    pass twice the limit; refused requests are not counted.
    """
    now = time.time() if now is None else now
    count, oldest = redis_model.rate_window(redis, key.key_id, now)
    if count >= per_minute:
        retry_after = max(1, math.ceil(oldest + 60 - now)) if oldest is not None else 60
        raise Problem(
            429,
            "Too many requests",
            f"this API key is limited to {per_minute} requests per minute; retry after {retry_after} s",
            kind="rate_limited",
            headers={"Retry-After": str(retry_after)},
        )
    redis_model.count_request(redis, key.key_id, now, f"{now:.6f}:{secrets.token_hex(4)}")
