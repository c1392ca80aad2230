"""``/v1/webhooks``: subscriptions per API key, and their delivery logs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response

from core.contracts import DeliveryLogEntry, WebhookSubscription
from service.dependencies import ApiKeyDep, StateDep
from service.operations.webhooks import (
    create_subscription,
    delete_subscription,
    delivery_log,
    get_subscription,
    list_subscriptions,
)
from service.schemas import ProblemBody, WebhookCreate, WebhookCreated

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ProblemBody, "description": "no such subscription for this key"},
    422: {"model": ProblemBody, "description": "URL refused"},
}


@router.post("", status_code=201, response_model=WebhookCreated, responses=_ERRORS)
def create_webhook(
    body: WebhookCreate, key: ApiKeyDep, state: StateDep, response: Response
) -> WebhookCreated:
    """Subscribe a URL to events; the signing secret is in this response only."""
    record = create_subscription(state.redis, state.settings, key, body.url, body.events)
    response.headers["Location"] = f"/v1/webhooks/{record.id}"
    return WebhookCreated(**record.public().model_dump(), secret=record.secret)


@router.get("", response_model=list[WebhookSubscription])
def list_webhooks(key: ApiKeyDep, state: StateDep) -> list[WebhookSubscription]:
    """List this key's subscriptions (secrets are never shown again)."""
    return [r.public() for r in list_subscriptions(state.redis, key)]


@router.get("/{sub_id}", response_model=WebhookSubscription, responses=_ERRORS)
def read_webhook(sub_id: str, key: ApiKeyDep, state: StateDep) -> WebhookSubscription:
    """Read one subscription."""
    return get_subscription(state.redis, key, sub_id).public()


@router.delete("/{sub_id}", status_code=204, responses=_ERRORS)
def delete_webhook(sub_id: str, key: ApiKeyDep, state: StateDep) -> Response:
    """Delete a subscription and its delivery log."""
    delete_subscription(state.redis, key, sub_id)
    return Response(status_code=204)


@router.get("/{sub_id}/deliveries", response_model=list[DeliveryLogEntry], responses=_ERRORS)
def read_deliveries(
    sub_id: str, key: ApiKeyDep, state: StateDep, limit: int = Query(50, ge=1, le=200)
) -> list[DeliveryLogEntry]:
    """Read the delivery log of a subscription, newest attempt first."""
    return delivery_log(state.redis, key, sub_id, limit)
