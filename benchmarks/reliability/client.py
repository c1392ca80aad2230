"""HTTP helpers of the suite: uploads (multipart built by hand, so hostile filenames go on the wire
exactly as written), polling a job to its end, and percentiles."""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from typing import Any

import httpx


def multipart_body(
    data: bytes, config: bytes | None = None, *, filename: bytes = b"adapter_model.safetensors"
) -> tuple[bytes, str]:
    """A multipart/form-data body with a ``file`` part (and a ``config`` part); returns (body, content type)."""
    boundary = "rel" + secrets.token_hex(12)
    b = boundary.encode()
    parts = [
        b"--" + b + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    ]
    if config is not None:
        parts.append(
            b"--" + b + b"\r\n"
            b'Content-Disposition: form-data; name="config"; filename="adapter_config.json"\r\n'
            b"Content-Type: application/json\r\n\r\n" + config + b"\r\n"
        )
    body = b"".join(parts) + b"--" + b + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def upload(
    client: httpx.Client,
    base: str,
    key: str,
    data: bytes,
    config: bytes | None = None,
    *,
    raw: bool = False,
    filename: bytes = b"adapter_model.safetensors",
    timeout: float = 60.0,
) -> httpx.Response:
    headers = {"X-API-Key": key}
    if raw and config is None:
        headers["content-type"] = "application/octet-stream"
        return client.post(f"{base}/v1/adapters", content=data, headers=headers, timeout=timeout)
    body, ctype = multipart_body(data, config, filename=filename)
    headers["content-type"] = ctype
    return client.post(f"{base}/v1/adapters", content=body, headers=headers, timeout=timeout)


def wait_job(
    client: httpx.Client,
    base: str,
    key: str,
    job_id: str,
    timeout_s: float = 300,
    poll_s: float = 0.1,
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until finished or failed; retries through 5xx/connection errors."""
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {"status": "unknown"}
    while time.monotonic() < deadline:
        try:
            r = client.get(f"{base}/v1/jobs/{job_id}", headers={"X-API-Key": key}, timeout=10)
            if r.status_code == 200:
                last = r.json()
                if last["status"] in ("finished", "failed"):
                    return last
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    return {**last, "status": f"timeout (last: {last.get('status')})"}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def status_counts(statuses: list[int | str]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(statuses).items(), key=lambda kv: str(kv[0]))}


def count_5xx(counts: dict[str, int]) -> int:
    return sum(v for k, v in counts.items() if k.isdigit() and 500 <= int(k) < 600)
