"""Upload -> job -> report through the real API (uvicorn), real Redis and a real burst worker."""

from __future__ import annotations

import struct
import zipfile
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.inprocess import api_settings, run_worker_burst, running_api, upload, worker_settings
from harness.lora_files import (
    adapter_config,
    peft_adapter,
    raw_safetensors,
    safetensors_bytes,
    small_diffusers_adapter,
    with_header_length,
)
from harness.profile import API_KEY, AUTH, OTHER_KEY
from service.settings import hash_api_key

pytestmark = pytest.mark.redis


def stored_adapters(store: Path) -> list[Path]:
    return [p for p in (store / "adapters").rglob("*") if p.is_file()]


def leftover_temp_files(store: Path) -> list[Path]:
    return list((store / "tmp").iterdir())


def test_upload_job_report_round_trip_and_duplicates(redis_url: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with running_api(api_settings(redis_url, store)) as base:
        data, config = peft_adapter(1), adapter_config()
        r = upload(base, data, config=config)
        assert r.status_code == 202, r.text
        body = r.json()
        assert r.headers["location"] == body["status_url"] == f"{base}/v1/jobs/{body['job_id']}"
        assert body["status"] == "queued"
        assert body["report_id"] != body["sha256"]  # a config makes it a different report

        # the same bytes while queued: the same job, no second one
        again = upload(base, data, config=config)
        assert again.status_code == 202
        assert again.json()["job_id"] == body["job_id"]

        assert httpx.get(body["status_url"], headers=AUTH).json()["status"] == "queued"
        assert (
            httpx.get(body["report_url"], headers=AUTH).status_code == 404
        )  # no report before the scan ends

        assert run_worker_burst(worker_settings(redis_url, store))

        job = httpx.get(body["status_url"], headers=AUTH).json()
        assert job["status"] == "finished"
        assert job["report_url"] == body["report_url"]
        report = httpx.get(body["report_url"], headers=AUTH).json()
        assert report["sha256"] == body["sha256"]
        assert report["format"] == "peft"
        assert report["scale_source"] == "adapter_config"
        assert report["modules"][0] == {
            "name": "encoder.layer.0.attention.self.query", "out_features": 32, "in_features": 32, "rank": 4, "scale": 2.0,
        }  # fmt: skip
        assert {c["name"] for c in report["checks"]} >= {"finite_values", "trained_factors"}
        # no predictors shipped in this test: review, said plainly
        assert report["verdict"] == "review"
        assert report["predictions"] == []
        assert any(
            r["code"] == "no_predictor" and "no predictor for this base model" in r["message"]
            for r in report["reasons"]
        )
        assert report["schema_version"] == 1 and report["versions"]["loravet"]

        # after the report exists: 200, same job and report, nothing enqueued
        done = upload(base, data, config=config)
        assert done.status_code == 200
        assert done.json()["job_id"] == body["job_id"]
        assert done.json()["status"] == "finished"
        assert not run_worker_burst(worker_settings(redis_url, store))  # no work left

        # the same adapter bytes without a config, as a raw body: another report
        raw = upload(base, data, raw=True)
        assert raw.status_code == 202
        assert raw.json()["report_id"] == raw.json()["sha256"] == body["sha256"]
        assert run_worker_burst(worker_settings(redis_url, store))
        plain = httpx.get(raw.json()["report_url"], headers=AUTH).json()
        assert plain["scale_source"] == "assumed"
        assert any(c["name"] == "scale_known" and c["status"] == "warn" for c in plain["checks"])
    assert len(stored_adapters(store)) == 1  # stored once by sha256
    assert leftover_temp_files(store) == []


def _zip_bytes() -> bytes:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    return buf.getvalue()


BAD_FILES = {
    "pickle": (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", 415, "pickle"),
    "torch_zip": (_zip_bytes(), 415, "pickle"),
    "truncated_header": (struct.pack("<Q", 500) + b'{"a": 1', 422, "header"),
    "json_garbage": (raw_safetensors(b"{not json}  "), 422, "not valid JSON"),
    "not_a_lora": (
        safetensors_bytes({"model.embed.weight": np.ones((4, 4), np.float32)}),
        422,
        "accepted",
    ),
    "loha": (
        safetensors_bytes({"lora_unet_down_blocks_0_attn.hada_w1_a": np.ones((4, 4), np.float32)}),
        422,
        "LoHa",
    ),
    "nan_weights": (
        safetensors_bytes(
            {
                "base_model.model.encoder.layer.0.attention.self.query.lora_A.weight": np.full(
                    (2, 8), np.nan, np.float32
                ),
                "base_model.model.encoder.layer.0.attention.self.query.lora_B.weight": np.ones(
                    (8, 2), np.float32
                ),
            }
        ),
        422,
        "NaN",
    ),
    "header_claims_huge": (
        raw_safetensors(
            {
                "x.lora_A.weight": {
                    "dtype": "F32",
                    "shape": [4096, 4096],
                    "data_offsets": [0, 4096 * 4096 * 4],
                }
            }
        ),
        413,
        "accepted up to",
    ),
}


def test_bad_files_are_refused_with_the_right_status_and_never_stored(
    redis_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with running_api(api_settings(redis_url, store, max_upload_bytes=64 * 1024)) as base:
        for name, (data, status, needle) in BAD_FILES.items():
            r = upload(base, data)
            assert r.status_code == status, (name, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
            problem = r.json()
            assert set(problem) >= {"type", "title", "status", "detail"}
            assert needle.lower() in problem["detail"].lower(), (name, problem)
            assert "Traceback" not in r.text
        # a valid LoRA over the byte cap: cut off as the body passes the limit
        big = peft_adapter(2, layers=12, hidden=64, rank=8)
        assert len(big) > 64 * 1024
        for raw in (False, True):
            r = upload(base, big, raw=raw)
            assert r.status_code == 413, r.text
            assert "accepted up to 65,536 bytes" in r.json()["detail"]
        # a pickle is named as such even when raw
        r = upload(base, BAD_FILES["pickle"][0], raw=True)
        assert r.status_code == 415 and "pickle" in r.json()["detail"]
        # malformed requests
        r = httpx.post(
            f"{base}/v1/adapters", content=b"x", headers={**AUTH, "content-type": "text/plain"}
        )
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]
        r = httpx.post(f"{base}/v1/adapters", files={"weights": ("a", b"abc")}, headers=AUTH)
        assert r.status_code == 422 and "unexpected form field 'weights'" in r.json()["detail"]
        r = httpx.post(
            f"{base}/v1/adapters", files={"config": ("c", adapter_config())}, headers=AUTH
        )
        assert r.status_code == 422 and "no `file` part" in r.json()["detail"]
        r = upload(base, peft_adapter(3), config=b"{not json")
        assert r.status_code == 422 and "adapter_config.json" in r.json()["detail"]
    assert stored_adapters(store) == []
    assert leftover_temp_files(store) == []


def test_keys_rate_limit_and_job_quota(redis_url: str, tmp_path: Path) -> None:
    settings = api_settings(
        redis_url, tmp_path / "store", rate_limit_per_minute=4, max_active_jobs_per_key=1, keys=[API_KEY],
        key_hashes=[hash_api_key(OTHER_KEY)],
    )  # fmt: skip
    with running_api(settings) as base:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert httpx.get(base + path).status_code in (200, 503), (
                path
            )  # readyz: 503 with no worker
        r = httpx.get(f"{base}/v1/predictors")
        assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = upload(base, peft_adapter(4), key="not-a-valid-key-at-all-000")
        assert r.status_code == 401 and "not valid" in r.json()["detail"]
        # a key configured only by its hash works, as a bearer token too
        r = httpx.get(f"{base}/v1/predictors", headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert r.status_code == 200 and r.json() == {"workers": 0, "predictors": []}

        assert upload(base, peft_adapter(5)).status_code == 202
        quota = upload(base, peft_adapter(6))
        assert quota.status_code == 429, quota.text
        assert (
            "unfinished vetting jobs" in quota.json()["detail"]
            and int(quota.headers["retry-after"]) > 0
        )
        assert upload(base, peft_adapter(5)).status_code == 202  # a duplicate is not a new job
        assert (
            httpx.get(f"{base}/v1/predictors", headers=AUTH).status_code == 200
        )  # 4th request this minute
        limited = httpx.get(f"{base}/v1/predictors", headers=AUTH)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert "4 requests per minute" in limited.json()["detail"]
        # the other key has its own budget
        assert (
            httpx.get(f"{base}/v1/predictors", headers={"X-API-Key": OTHER_KEY}).status_code == 200
        )
        metrics = httpx.get(f"{base}/metrics").text
        assert 'loravet_uploads_total{outcome="refused_429"} 1.0' in metrics
        assert 'loravet_queue_depth{queue="loravet-vetting"} 1.0' in metrics


def test_unexpected_errors_leave_no_trace(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.content_store import LocalContentStore

    def explode(self: LocalContentStore) -> Path:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(LocalContentStore, "temporary_file", explode)
    with running_api(api_settings(redis_url, tmp_path / "store")) as base:
        r = upload(base, peft_adapter(7))
        assert r.status_code == 500
        assert r.json()["title"] == "Internal server error"
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text
        r = httpx.get(f"{base}/v1/jobs/nope", headers=AUTH)
        assert r.status_code == 404 and r.json()["type"].endswith("job_not_found")
        assert httpx.get(f"{base}/v1/reports/{'0' * 64}", headers=AUTH).status_code == 404
        assert httpx.get(f"{base}/v1/reports/..%2F..%2Fetc", headers=AUTH).status_code == 404


def test_api_key_is_never_logged(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("DEBUG"), running_api(api_settings(redis_url, tmp_path / "store")) as base:
        upload(base, peft_adapter(8))
        httpx.get(f"{base}/v1/predictors", headers=AUTH)
        upload(base, b"\x80\x04junk")
    assert API_KEY not in caplog.text


def test_a_header_length_that_looks_like_a_pickle_marker_is_accepted(
    redis_url: str, tmp_path: Path
) -> None:
    """A valid diffusers adapter whose 896-byte header makes the file start with 80 03 (a
    protocol-3 pickle's opcode): accepted and scanned, in both upload forms."""
    data = with_header_length(small_diffusers_adapter(), 896)
    assert data[:2] == b"\x80\x03"
    store = tmp_path / "store"
    with running_api(api_settings(redis_url, store)) as base:
        for raw in (False, True):
            r = upload(base, data, raw=raw)
            assert r.status_code == 202, r.text
        assert run_worker_burst(worker_settings(redis_url, store))
        report = httpx.get(r.json()["report_url"], headers=AUTH).json()
        assert report["format"] == "diffusers" and report["base_model"]["family"] == "sd1"
