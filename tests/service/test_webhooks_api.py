"""Webhook subscriptions through the API, and a signed delivery that succeeds after the receiver was down."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from harness.inprocess import api_settings, run_worker_burst, running_api, upload, worker_settings
from harness.lora_files import peft_adapter
from harness.profile import AUTH, OTHER_KEY
from harness.webhook_receiver import WebhookReceiver
from tests.workers.test_webhook_delivery import verify_standard_webhook

pytestmark = pytest.mark.redis


def test_subscription_urls_are_checked(redis_url: str, tmp_path: Path) -> None:
    with running_api(api_settings(redis_url, tmp_path / "store")) as base:
        for url in (
            "http://127.0.0.1:8080/hook", "http://10.0.0.5/hook", "http://[::1]/hook", "http://169.254.169.254/latest",
            "http://metadata.google.internal/computeMetadata", "file:///etc/passwd", "https://user:pw@example.com/",
        ):  # fmt: skip
            r = httpx.post(f"{base}/v1/webhooks", json={"url": url}, headers=AUTH)
            assert r.status_code == 422, url
            assert r.json()["type"].endswith("invalid_webhook_url")
        r = httpx.post(
            f"{base}/v1/webhooks",
            json={"url": "https://hooks.example.com/x", "events": ["report.exploded"]},
            headers=AUTH,
        )
        assert r.status_code == 422
        r = httpx.post(
            f"{base}/v1/webhooks", json={"url": "https://hooks.example.com/x"}, headers=AUTH
        )
        assert r.status_code == 201 and r.json()["secret"].startswith("whsec_")
    with running_api(
        api_settings(redis_url, tmp_path / "store", allow_private_webhooks=True)
    ) as base:
        assert (
            httpx.post(
                f"{base}/v1/webhooks", json={"url": "http://127.0.0.1:8080/h"}, headers=AUTH
            ).status_code
            == 201
        )
        r = httpx.post(f"{base}/v1/webhooks", json={"url": "http://169.254.169.254/"}, headers=AUTH)
        assert r.status_code == 422 and "metadata" in r.json()["detail"]


def test_signed_delivery_retried_after_the_receiver_was_down(
    redis_url: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    receiver = WebhookReceiver()  # its port is chosen, nothing listens yet: the receiver is down
    wsettings = worker_settings(
        redis_url, store, allow_private_webhooks=True, webhook_retry_schedule=[1, 1]
    )
    with running_api(api_settings(redis_url, store, allow_private_webhooks=True)) as base:
        created = httpx.post(f"{base}/v1/webhooks", json={"url": receiver.url}, headers=AUTH)
        assert created.status_code == 201
        sub = created.json()
        assert sub["events"] == ["report.completed", "report.failed"]
        listed = httpx.get(f"{base}/v1/webhooks", headers=AUTH).json()
        assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
        assert (
            httpx.get(
                f"{base}/v1/webhooks/{sub['id']}", headers={"X-API-Key": OTHER_KEY}
            ).status_code
            == 404
        )

        accepted = upload(base, peft_adapter(31)).json()
        run_worker_burst(
            wsettings, with_scheduler=True
        )  # vets, then the first delivery attempt fails
        log = httpx.get(f"{base}/v1/webhooks/{sub['id']}/deliveries", headers=AUTH).json()
        assert [(e["outcome"], e["attempt"]) for e in log] == [("failed", 1)]
        assert "Connect" in log[0]["detail"] and log[0]["next_attempt_in_s"] == 1

        receiver.start()
        try:
            time.sleep(1.2)
            run_worker_burst(wsettings, with_scheduler=True)  # the scheduler releases the retry
            assert len(receiver.received) == 1
            got = receiver.received[0]
            assert got.path == "/hooks/loravet"
            assert verify_standard_webhook(sub["secret"], got.headers, got.body)
            assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
            event = json.loads(got.body)
            assert event["type"] == "report.completed" and event["id"] == got.headers["webhook-id"]
            assert event["data"]["job_id"] == accepted["job_id"]
            assert event["data"]["verdict"] == "review"
            assert event["data"]["report_url"] == accepted["report_url"]
        finally:
            receiver.stop()
        log = httpx.get(f"{base}/v1/webhooks/{sub['id']}/deliveries", headers=AUTH).json()
        assert [(e["outcome"], e["attempt"]) for e in log] == [("delivered", 2), ("failed", 1)]
        metrics = httpx.get(f"{base}/metrics").text
        assert 'loravet_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics

        assert httpx.delete(f"{base}/v1/webhooks/{sub['id']}", headers=AUTH).status_code == 204
        assert httpx.get(f"{base}/v1/webhooks/{sub['id']}", headers=AUTH).status_code == 404
