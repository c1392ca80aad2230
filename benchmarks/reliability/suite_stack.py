"""The reliability suite's stack settings: the shared test profile (``harness.profile``) with what
load and faults need on top of it: no rate or quota in the way of the producers, five vetting
attempts a second apart (a killed worker's jobs must be picked up again), a longer execution TTL
and webhook retry schedule (receiver outages of several seconds), and INFO logs (the security part
reads them)."""

from __future__ import annotations

from typing import Any

from harness.profile import settings_env
from harness.stack import StackConfig

SUITE_API = {
    "rate_limit_per_minute": 1_000_000,
    "max_active_jobs_per_key": 1000,
    "max_queue_depth": 100_000,
    "vet_retries": 5,
    "vet_retry_intervals": [1],
    "log_level": "INFO",
}
SUITE_WORKER = {
    "execution_ttl_s": 5,
    "webhook_retry_schedule": [1, 1, 2, 2, 3, 3, 5, 5, 5, 5, 5, 5],
    "log_level": "INFO",
}


def suite_config(**options: Any) -> StackConfig:
    """A ``StackConfig`` with the suite's settings; a part's own ``api_env``/``worker_env`` win."""
    api_env = {**settings_env("LORAVET_API_", SUITE_API), **options.pop("api_env", {})}
    worker_env = {**settings_env("LORAVET_WORKER_", SUITE_WORKER), **options.pop("worker_env", {})}
    return StackConfig(api_env=api_env, worker_env=worker_env, **options)
