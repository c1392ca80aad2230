"""``POST /v1/adapters``: stream, check, store by sha256, enqueue (or return the existing job/report);
the work is ``service.operations.uploads``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.dependencies import ApiKeyDep, StateDep, base_url
from service.operations.uploads import accept_request_upload
from service.schemas import ProblemBody, UploadAccepted

router = APIRouter(prefix="/v1", tags=["adapters"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the LoRA .safetensors file",
                        },
                        "config": {
                            "type": "string",
                            "format": "binary",
                            "description": "optional adapter_config.json",
                        },
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemBody, "content": {"application/problem+json": {}}, "description": text}
    for code, text in {
        401: "missing or invalid API key",
        413: "file larger than the limit",
        415: "not a safetensors file (pickles are named as such)",
        422: "not a valid LoRA adapter, or a malformed upload",
        429: "rate limit or job quota reached (see Retry-After)",
    }.items()
}


@router.post(
    "/adapters",
    status_code=202,
    response_model=UploadAccepted,
    responses={
        200: {"model": UploadAccepted, "description": "already vetted: the report exists"},
        **_ERRORS,
    },
    openapi_extra=_UPLOAD_BODY,
)
async def create_adapter(
    request: Request, response: Response, key: ApiKeyDep, state: StateDep
) -> UploadAccepted:
    """Upload a LoRA adapter (multipart `file` + optional `config`, or a raw body) for vetting."""
    base = base_url(request, state)
    done = await accept_request_upload(request, state, key, base)
    status_url = f"{base}/v1/jobs/{done.job_id}"
    if done.status == "finished":
        response.status_code = 200
    else:
        response.headers["Location"] = status_url
    return UploadAccepted(
        job_id=done.job_id,
        report_id=done.report_id,
        sha256=done.sha256,
        status=done.status,
        status_url=status_url,
        report_url=f"{base}/v1/reports/{done.report_id}",
    )
