"""Settings of the API process, from ``LORAVET_API_*`` environment variables (or a ``.env``).

API keys come as plaintext (``LORAVET_API_KEYS``, comma-separated) or as sha256 hex digests
(``LORAVET_API_KEY_HASHES``); plaintext keys are hashed when the settings load and only the hashes
are kept. Keys are never logged. The placeholder keys of ``.env.example`` are refused, so a copied
example file cannot become a production secret.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.content_store import ContentStoreSettings
from core.redis_model import RedisUrl

MIN_KEY_LENGTH = 20
"""Shortest API key accepted (``loravet serve`` generates 43 characters)."""

_PLACEHOLDER = re.compile(r"change|example|placeholder|your[-_]?key|xxxx", re.IGNORECASE)


def hash_api_key(key: str) -> str:
    """The form keys are stored in: sha256 hex of the UTF-8 key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _split(value: object) -> object:
    if isinstance(value, str):
        return [v for v in value.replace(" ", "").split(",") if v]
    return value


class ApiSettings(BaseSettings, ContentStoreSettings):
    """Everything the API needs; defaults suit ``loravet serve`` on one machine. The content store
    (``LORAVET_API_STORE_BACKEND``, ``..._STORAGE_DIR``, ``..._S3_*``) is
    :class:`core.content_store.ContentStoreSettings`, shared with the workers' settings."""

    model_config = SettingsConfigDict(env_prefix="LORAVET_API_", env_file=".env", extra="ignore")

    redis_url: RedisUrl = "redis://127.0.0.1:6379/0"
    keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    key_hashes: Annotated[list[str], NoDecode] = Field(default_factory=list)

    max_upload_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    """Largest adapter accepted, in bytes (the body is cut off as soon as it passes this)."""
    max_config_bytes: int = Field(default=1024 * 1024, ge=1024)

    rate_limit_per_minute: int = Field(default=120, ge=1)
    """Requests per API key per minute, all authenticated routes together."""
    max_active_jobs_per_key: int = Field(default=50, ge=1)
    """Unfinished vetting jobs one key may have; more uploads get 429 until some finish."""
    max_queue_depth: int = Field(default=5000, ge=1)
    """Queued vetting jobs in total; past this every new upload gets 429."""
    max_webhooks_per_key: int = Field(default=20, ge=1)

    job_timeout_s: int = Field(default=300, ge=1)
    vet_retries: int = Field(default=3, ge=0)
    vet_retry_intervals: Annotated[list[int], NoDecode] = Field(
        default_factory=lambda: [0, 60, 300]
    )
    """Seconds before each retry of a vetting job that failed for a transient reason or whose worker
    died. The first is 0 on purpose: a delayed retry goes through RQ's scheduler, and when the worker
    that died held the scheduler lock, nothing is scheduled until that lock expires (61 s); an
    immediate retry goes straight back to the queue (measured in docs/reliability.md)."""
    result_ttl_s: int = Field(default=30 * 24 * 3600, ge=60)
    """How long job records stay queryable (reports themselves are kept in the store for good)."""

    allow_private_webhooks: bool = False
    """Accept webhook URLs on private, loopback and link-local addresses (on-prem receivers)."""
    public_url: str | None = None
    """Base URL used in links (``status_url``, ``report_url``, webhook payloads); default: the request's."""
    session_secret: SecretStr | None = None
    """Signs the web pages' session cookies (16+ characters); default: random per process, so
    sessions end when the API restarts. Set it when several API replicas serve the pages."""
    log_level: str = "INFO"

    @field_validator("keys", "key_hashes", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split(value)

    @field_validator("vet_retry_intervals", mode="before")
    @classmethod
    def _split_ints(cls, value: object) -> object:
        value = _split(value)
        return [int(v) for v in value] if isinstance(value, list) else value

    @field_validator("key_hashes")
    @classmethod
    def _check_hashes(cls, value: list[str]) -> list[str]:
        for h in value:
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                raise ValueError(
                    "LORAVET_API_KEY_HASHES must be sha256 hex digests (64 lowercase hex characters)"
                )
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> ApiSettings:
        for key in self.keys:
            raw = key.get_secret_value()
            if len(raw) < MIN_KEY_LENGTH:
                raise ValueError(
                    f"API keys must be at least {MIN_KEY_LENGTH} characters (one in LORAVET_API_KEYS is shorter)"
                )
            if _PLACEHOLDER.search(raw):
                raise ValueError(
                    'LORAVET_API_KEYS still holds a placeholder; generate keys with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
                )
        if not self.keys and not self.key_hashes:
            raise ValueError(
                "no API key configured: set LORAVET_API_KEYS (comma-separated) or LORAVET_API_KEY_HASHES"
            )
        return self

    def accepted_key_hashes(self) -> frozenset[str]:
        """The sha256 digests of every accepted key."""
        return frozenset([hash_api_key(k.get_secret_value()) for k in self.keys] + self.key_hashes)
