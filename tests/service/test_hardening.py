"""Regression tests for what the reliability suite (benchmarks/reliability) found in the API.

* a job id RQ refuses (non-ASCII, DEL...) answered 500 (schemathesis); now 404;
* Redis unreachable (a restart) answered 500; now 503 problem+json with Retry-After;
* a 405 listed only the first route's method in ``Allow`` (schemathesis); now every method;
* the OpenAPI documented errors as ``application/json`` and missed 400/401/429 (schemathesis);
* a key a client put in a URL query was written to the access log; values are now redacted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from harness.embedded_redis import free_port
from harness.inprocess import api_settings, running_api
from harness.profile import AUTH
from service.api_cli import RedactQueryValues, redact_query

pytestmark = pytest.mark.redis


def test_job_ids_rq_refuses_are_404(redis_url: str, tmp_path: Path) -> None:
    with running_api(api_settings(redis_url, tmp_path / "store")) as base:
        for job_id in ("V%F3%AF%83%B5%7F", "a.b", "%7F", "x" * 100):
            r = httpx.get(f"{base}/v1/jobs/{job_id}", headers=AUTH)
            assert r.status_code == 404, (job_id, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")


def test_redis_down_is_503_with_retry_after(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with running_api(api_settings(dead, tmp_path / "store")) as base:
        r = httpx.get(f"{base}/v1/predictors", headers=AUTH, timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        assert r.json()["type"].endswith("service_unavailable")
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_405_allow_lists_every_method_of_the_path(redis_url: str, tmp_path: Path) -> None:
    with running_api(api_settings(redis_url, tmp_path / "store")) as base:
        r = httpx.put(f"{base}/v1/webhooks", headers=AUTH)
        assert r.status_code == 405
        assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}


def test_openapi_documents_problem_responses(redis_url: str, tmp_path: Path) -> None:
    with running_api(api_settings(redis_url, tmp_path / "store")) as base:
        schema = httpx.get(f"{base}/openapi.json").json()
    upload = schema["paths"]["/v1/adapters"]["post"]["responses"]
    for code in ("400", "401", "413", "415", "422", "429", "500", "503"):
        assert "application/problem+json" in upload[code]["content"], code
        assert "application/json" not in upload[code]["content"], code
    job = schema["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert set(job) >= {"200", "401", "404", "422", "429"}
    readyz = schema["paths"]["/readyz"]["get"]["responses"]["503"]["content"]
    assert "application/json" in readyz  # a readiness body, not a problem


def test_access_log_never_shows_query_values() -> None:
    assert redact_query("/v1/jobs/x?api_key=secret&limit=5") == "/v1/jobs/x?api_key=***&limit=***"
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/jobs/x?key=s3cret-key-value", "1.1", 401), None,
    )  # fmt: skip
    assert RedactQueryValues().filter(record)
    assert "s3cret" not in record.getMessage()
