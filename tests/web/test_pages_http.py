"""The pages over real HTTP against the real stack (Redis, the API under uvicorn, a real worker),
without a browser: sessions, CSRF, upload through the API's intake, job status, report, recent
reports, predictors, escaping and security headers."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.inprocess import api_settings, run_worker_burst, running_api, worker_settings
from harness.lora_files import adapter_config, peft_adapter, safetensors_bytes
from harness.profile import API_KEY, OTHER_KEY

pytestmark = pytest.mark.redis

HOSTILE = "<img src=x onerror=alert(1)>"


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(
    client: httpx.Client, key: str = API_KEY, next_path: str = "/ui/upload"
) -> httpx.Response:
    page = client.get("/ui/sign-in", params={"next": next_path})
    return client.post(
        "/ui/sign-in", data={"api_key": key, "csrf_token": csrf_of(page.text), "next": next_path}
    )


def upload(
    client: httpx.Client,
    csrf: str | None,
    data: bytes,
    config: bytes | None = None,
    name: str = "adapter_model.safetensors",
) -> httpx.Response:
    files = {"file": (name, data, "application/octet-stream")}
    if config is not None:
        files["config"] = ("adapter_config.json", config, "application/json")
    headers = {"X-Requested-With": "XMLHttpRequest"}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return client.post("/ui/upload", files=files, headers=headers)


def hostile_adapter() -> bytes:
    rng = np.random.default_rng(3)
    tensors = {}
    for name in (f"base_model.model.{HOSTILE}.layer.0.q", "base_model.model.x\"&'.q"):
        tensors[f"{name}.lora_A.weight"] = rng.normal(size=(2, 8)).astype(np.float32)
        tensors[f"{name}.lora_B.weight"] = rng.normal(size=(8, 2)).astype(np.float32)
    return safetensors_bytes(tensors)


def test_pages_need_a_session_and_sign_in_is_protected(redis_url: str, tmp_path: Path) -> None:
    with (
        running_api(api_settings(redis_url, tmp_path / "store")) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        root = client.get("/")
        assert root.status_code == 303 and root.headers["location"] == "/ui/upload"
        for path in (
            "/ui/upload",
            "/ui/reports",
            "/ui/predictors",
            "/ui/jobs/abc",
            "/ui/reports/" + "0" * 64,
        ):
            r = client.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/ui/sign-in"), path
        assert (
            client.get("/ui/reports?verdict=review").headers["location"]
            == "/ui/sign-in?next=%2Fui%2Freports%3Fverdict%3Dreview"
        )
        status = client.get("/ui/jobs/abc/status")
        assert status.status_code == 401 and status.json()["type"].endswith("session_required")
        refused = upload(client, "whatever", peft_adapter(0))
        assert refused.status_code == 401

        page = client.get("/ui/sign-in")
        assert page.status_code == 200
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "loravet_session=" in cookie
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        token = csrf_of(page.text)
        wrong_token = client.post(
            "/ui/sign-in", data={"api_key": API_KEY, "csrf_token": "nope", "next": "/ui/upload"}
        )
        assert wrong_token.status_code == 403 and "security token" in wrong_token.text
        token = csrf_of(wrong_token.text)
        wrong_key = client.post(
            "/ui/sign-in",
            data={
                "api_key": "k3y-that-is-not-accepted-anywhere",
                "csrf_token": token,
                "next": "/ui/upload",
            },
        )
        assert (
            wrong_key.status_code == 401
            and "not accepted by this loravet instance" in wrong_key.text
        )
        assert client.get("/ui/upload").status_code == 303  # still signed out

        ok = sign_in(client, next_path="//evil.example/")
        assert ok.status_code == 303 and ok.headers["location"] == "/ui/upload"  # no open redirect
        upload_page = client.get("/ui/upload")
        assert upload_page.status_code == 200 and "Upload an adapter" in upload_page.text
        assert API_KEY not in upload_page.text and API_KEY not in client.cookies.get(
            "loravet_session", ""
        )
        static = client.get("/ui/static/loravet.js")
        assert static.status_code == 200 and "XMLHttpRequest" in static.text

        # sign-out needs the session's token, then the session is gone
        assert client.post("/ui/sign-out", data={"csrf_token": "nope"}).status_code == 403
        out = client.post("/ui/sign-out", data={"csrf_token": csrf_of(upload_page.text)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in?signed_out=1"
        assert client.get("/ui/upload").status_code == 303


def test_a_session_ends_when_its_key_is_removed(redis_url: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with running_api(api_settings(redis_url, store, session_secret="s3cret-for-sessions-0123456789")) as base, httpx.Client(base_url=base, timeout=30) as client:  # fmt: skip
        assert sign_in(client).status_code == 303
        cookie = client.cookies["loravet_session"]
    others = api_settings(redis_url, store, keys=[OTHER_KEY], session_secret="s3cret-for-sessions-0123456789")  # fmt: skip
    with running_api(others) as base, httpx.Client(base_url=base, timeout=30) as client:
        client.cookies.set("loravet_session", cookie)
        assert client.get("/ui/upload").status_code == 303  # the same secret, but the key is gone
    same = api_settings(redis_url, store, session_secret="s3cret-for-sessions-0123456789")
    with running_api(same) as base, httpx.Client(base_url=base, timeout=30) as client:
        client.cookies.set("loravet_session", cookie)
        assert client.get("/ui/upload").status_code == 200  # survives a restart with a set secret


def test_upload_job_report_recent_and_predictors(redis_url: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # the worker and the tiny predictors
    from tests.workers.test_real_predictors import write_predictors
    from workers.resident_worker import VettingWorker
    from workers.worker_runtime import WorkerRuntime, load_registry

    del torch
    store = tmp_path / "store"
    write_predictors(tmp_path / "predictors", harmful_threshold=1.0)
    wsettings = worker_settings(redis_url, store, predictor_dir=tmp_path / "predictors")
    with (
        running_api(api_settings(redis_url, store)) as base,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        assert sign_in(client).status_code == 303
        csrf = csrf_of(client.get("/ui/upload").text)

        no_token = upload(client, None, peft_adapter(1), adapter_config())
        assert no_token.status_code == 403 and no_token.json()["type"].endswith("csrf_failed")

        pickled = upload(
            client, csrf, pickle.dumps({"lora_A": [1.0, 2.0]}, protocol=4), name="adapter_model.bin"
        )
        assert pickled.status_code == 415
        problem = pickled.json()
        assert problem["type"].endswith("pickle_refused")
        assert "pickles can run code when loaded" in problem["detail"]
        assert "safetensors" in problem["hint"]

        accepted = upload(client, csrf, peft_adapter(1), adapter_config())
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["next"] == body["job_page"] == f"/ui/jobs/{body['job_id']}"
        job_page = client.get(body["job_page"])
        assert job_page.status_code == 200 and "Waiting for a worker" in job_page.text
        assert client.get(f"{body['job_page']}/status").json()["status"] == "queued"
        hostile = upload(client, csrf, hostile_adapter())
        assert hostile.status_code == 202, hostile.text

        run_worker_burst(wsettings)

        status = client.get(f"{body['job_page']}/status").json()
        assert status["status"] == "finished" and status["done"]
        assert status["verdict"] == "accept" and status["report_page"] == body["report_page"]
        report = client.get(body["report_page"])
        assert report.status_code == 200
        html = report.text
        assert 'id="verdict-value">accept<' in html
        assert "P(harmful)" in html and "is below the threshold 1.00: not flagged" in html
        assert "tiny-bert-harmful@0.1" in html and "tiny-bert-quality@0.1" in html
        assert (
            "not shown: no live worker has this predictor loaded now" in html
        )  # burst worker is gone
        assert html.count("<svg") >= 2 and "encoder.layer.1.attention.self.value" in html

        hostile_html = client.get(hostile.json()["report_page"]).text
        assert HOSTILE not in hostile_html and "&lt;img src=x onerror=alert(1)&gt;" in hostile_html
        assert "x&#34;&amp;&#39;.q" in hostile_html

        again = upload(
            client, csrf, peft_adapter(1), adapter_config()
        )  # the same bytes: the report
        assert again.status_code == 200 and again.json()["next"] == body["report_page"]

        recent = client.get("/ui/reports").text
        assert body["report_id"][:16] in recent and hostile.json()["report_id"][:16] in recent
        assert recent.index(hostile.json()["report_id"][:16]) < recent.index(body["report_id"][:16])
        accepted_only = client.get("/ui/reports", params={"verdict": "accept"}).text
        assert (
            body["report_id"][:16] in accepted_only
            and hostile.json()["report_id"][:16] not in accepted_only
        )
        assert (
            "No report with verdict reject yet."
            in client.get("/ui/reports", params={"verdict": "reject"}).text
        )

        assert "No worker is alive" in client.get("/ui/predictors").text
        registry, device = load_registry(wsettings.predictor_dir, "cpu")
        worker = VettingWorker(WorkerRuntime(wsettings.model_copy(update={"name": "pages-worker"}), registry=registry, device=device))  # fmt: skip
        worker.register_birth()
        try:
            predictors = client.get("/ui/predictors").text
            assert "1 worker(s) alive" in predictors
            assert "tiny-bert-harmful" in predictors and "tiny-bert-quality" in predictors
            assert "ranks a harmful adapter above a clean one 50% of the time" in predictors
            report_html = client.get(body["report_page"]).text
            assert "ranks a harmful adapter above a clean one 50% of the time" in report_html
        finally:
            worker.register_death()

        missing = client.get("/ui/reports/" + "e" * 64)
        assert missing.status_code == 404 and "No report yet" in missing.text
        assert client.get("/ui/jobs/no-such-job").status_code == 404
        assert client.get("/ui/reports/not-a-sha").status_code == 404
