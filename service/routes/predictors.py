"""``GET /v1/predictors``: what the live workers loaded."""

from __future__ import annotations

from fastapi import APIRouter

from service.dependencies import ApiKeyDep, StateDep
from service.operations.predictors import live_predictors
from service.schemas import PredictorsResponse

router = APIRouter(tags=["predictors"])


@router.get("/v1/predictors", response_model=PredictorsResponse)
def read_predictors(key: ApiKeyDep, state: StateDep) -> PredictorsResponse:
    """List the predictors the live workers loaded (base-model spec, task, validation metrics)."""
    workers, predictors = live_predictors(state.redis)
    return PredictorsResponse(workers=workers, predictors=predictors)
