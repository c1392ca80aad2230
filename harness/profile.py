"""The one fast-settings profile of every stack a test or benchmark starts, in-process or as
processes: known API keys, no public URL, immediate retries, a one-second maintenance loop, short
execution and webhook timeouts, no jitter, CPU. A suite that needs more (the reliability suite's
load and fault parts) overrides what it needs on top of it, never beside it.
"""

from __future__ import annotations

from typing import Any

KEYS = (
    "rel-key-0-8c1f2e9d7a6b5c4d3e2f1a0b",
    "rel-key-1-4f5e6d7c8b9a0f1e2d3c4b5a",
    "rel-key-2-0a1b2c3d4e5f6a7b8c9d0e1f",
    "rel-key-3-9e8d7c6b5a4f3e2d1c0b9a8f",
    "rel-key-4-1b3d5f7a9c2e4a6c8e0a2c4e",
)
"""API keys of the test stacks (plaintext: the security part greps the logs for them)."""
API_KEY, OTHER_KEY = KEYS[0], KEYS[1]
AUTH = {"X-API-Key": API_KEY}

FAST_API: dict[str, Any] = {
    "keys": list(KEYS),
    "key_hashes": [],
    "public_url": None,
    "vet_retry_intervals": [0],
}
"""``ApiSettings`` fields of the profile (the rest keep their defaults)."""

FAST_WORKER: dict[str, Any] = {
    "device": "cpu",
    "execution_ttl_s": 3,
    "maintenance_interval_s": 1,
    "webhook_retry_schedule": [1],
    "webhook_jitter": 0.0,
    "webhook_timeout_s": 3.0,
}
"""``WorkerSettings`` fields of the profile."""


def settings_env(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    """The environment a ``loravet api`` / ``loravet worker`` process reads the same settings from
    (``LORAVET_API_`` / ``LORAVET_WORKER_`` + the field name; lists comma-separated; ``None`` and
    empty-list fields left unset, so they keep their default)."""
    env = {}
    for name, value in values.items():
        if value is None or value == []:
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
        env[f"{prefix}{name.upper()}"] = text
    return env
