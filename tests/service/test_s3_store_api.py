"""API and workers on "different machines": they share only Redis and an S3 bucket (a real moto
server process with IAM authentication on), each with its own local directory. The upload goes to
the bucket, a burst worker that never saw the API's directory turns it into a report, and an
unusable store answers 503 problem+json, never a 500."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.embedded_s3 import EmbeddedS3
from harness.inprocess import api_settings, run_worker_burst, running_api, upload, worker_settings
from harness.lora_files import adapter_config, peft_adapter
from harness.profile import AUTH

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    with EmbeddedS3(tmp_path_factory.mktemp("s3")) as server:
        yield server


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_api_and_worker_share_only_redis_and_the_bucket(
    redis_url: str, s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    store = s3_server.settings(prefix=f"svc-{uuid.uuid4().hex[:12]}/")
    api_dir, worker_dir = tmp_path / "api-host", tmp_path / "worker-host"
    with running_api(api_settings(redis_url, api_dir, **store)) as base:
        r = upload(base, peft_adapter(3), config=adapter_config())
        assert r.status_code == 202, r.text
        body = r.json()

        assert run_worker_burst(worker_settings(redis_url, worker_dir, **store))

        job = httpx.get(body["status_url"], headers=AUTH).json()
        assert job["status"] == "finished", job
        report = httpx.get(body["report_url"], headers=AUTH)
        assert report.status_code == 200, report.text
        assert report.json()["sha256"] == body["sha256"]
        assert report.json()["verdict"] == "review"  # no predictors in this test, said plainly

        # the same bytes again: the report is found in the bucket, nothing new is queued
        again = upload(base, peft_adapter(3), config=adapter_config())
        assert again.status_code == 200, again.text
        assert again.json()["status"] == "finished"

    listed = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=store["s3_prefix"])
    kinds = sorted(o["Key"][len(store["s3_prefix"]) :].split("/")[0] for o in listed["Contents"])
    assert kinds == ["adapters", "configs", "reports"]
    # neither host kept a blob: the local directories hold scratch space only, now empty
    assert files_under(api_dir) == [] and files_under(worker_dir) == []


def test_an_unreachable_store_answers_503_problem(redis_url: str, tmp_path: Path) -> None:
    server = EmbeddedS3(tmp_path / "s3").start()
    try:
        settings = api_settings(redis_url, tmp_path / "api-host", **server.settings())
        with running_api(settings) as base:
            assert upload(base, peft_adapter(1)).status_code == 202  # the store works
            server.stop()
            for response in (
                upload(base, peft_adapter(2)),
                httpx.get(f"{base}/v1/reports/{'ab' * 32}", headers=AUTH),
            ):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.headers["retry-after"] == "5"
                problem = response.json()
                assert problem["type"] == "urn:loravet:problem:store_unavailable"
                assert "content store" in problem["detail"] and "unavailable" in problem["detail"]
                # the operator's details stay in the log
                assert server.url not in response.text and "Traceback" not in response.text
                assert server.secret_access_key not in response.text
        assert files_under(tmp_path / "api-host") == []  # the received upload was not left behind
    finally:
        server.kill()


def test_refused_store_credentials_answer_503_without_the_secret(
    redis_url: str, s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    wrong_secret = "wrong-secret-0123456789abcdefghijkl"
    store = {**s3_server.settings(), "s3_secret_access_key": wrong_secret}
    with running_api(api_settings(redis_url, tmp_path / "api-host", **store)) as base:
        response = upload(base, peft_adapter(4))
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "urn:loravet:problem:store_unavailable"
    assert wrong_secret not in response.text and s3_server.secret_access_key not in response.text


def test_readiness_says_when_the_store_is_unavailable(redis_url: str, tmp_path: Path) -> None:
    """An orchestrator must stop routing uploads to an API whose bucket is gone: ``/readyz`` is
    503 with ``store: false`` then, and names neither the endpoint nor the secret."""
    server = EmbeddedS3(tmp_path / "s3").start()
    try:
        settings = api_settings(redis_url, tmp_path / "api-host", **server.settings())
        with running_api(settings) as base:
            ready = httpx.get(f"{base}/readyz").json()
            assert ready["store"] is True  # (no worker runs here, so not ready for that reason)
            server.stop()
            response = httpx.get(f"{base}/readyz")
            assert response.status_code == 503
            body = response.json()
            assert body["store"] is False and "content store is unavailable" in body["detail"]
            assert server.url not in response.text and server.secret_access_key not in response.text
    finally:
        server.kill()
