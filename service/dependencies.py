"""What routes get injected: the per-app state and the authenticated caller.

``ServiceState`` is built once per app by :func:`service.main.create_app`, so two apps (tests) never
share a Redis client, store or metrics registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis

from core.content_store import ContentStore
from service.auth import ApiKey, authenticate, enforce_rate_limit
from service.metrics import ServiceMetrics
from service.settings import ApiSettings


@dataclass
class ServiceState:
    settings: ApiSettings
    redis: Redis
    store: ContentStore
    metrics: ServiceMetrics
    accepted_key_hashes: frozenset[str] = field(default_factory=frozenset)


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.loravet
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


# declared for the OpenAPI document ("Authorize" in /docs); the check itself is `authenticate`
_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="an API key of this instance"
)
_bearer = HTTPBearer(auto_error=False, description="the same key as a bearer token")


def require_api_key(
    request: Request,
    state: StateDep,
    _header: Annotated[str | None, Security(_key_header)] = None,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> ApiKey:
    """401 without a valid key, 429 past the key's request rate."""
    key = authenticate(request, state.accepted_key_hashes)
    enforce_rate_limit(state.redis, key, state.settings.rate_limit_per_minute)
    return key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


def base_url(request: Request, state: ServiceState) -> str:
    """The service's public base URL (``LORAVET_API_PUBLIC_URL``, else what the request reached)."""
    return (state.settings.public_url or str(request.base_url)).rstrip("/")
