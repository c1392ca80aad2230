"""Signing, SSRF refusal and delivery attempts against a real HTTP receiver on loopback.

No test sends traffic beyond loopback: names are resolved by a replaced resolver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
from datetime import UTC, datetime
from pathlib import Path

import httpcore
import httpx
import pytest
from redis import Redis

from core import redis_model
from core.contracts import (
    ReportCompletedData,
    WebhookDeliveryArgs,
    WebhookEvent,
)
from core.webhook_security import (
    CallbackAddressError,
    address_refusal,
    check_callback_url,
    new_webhook_secret,
    sign_webhook,
)
from harness.inprocess import api_settings, worker_settings
from harness.webhook_receiver import WebhookReceiver
from service.auth import ApiKey
from service.operations.webhooks import create_subscription
from workers import webhook_delivery
from workers.webhook_delivery import PinnedAddressTransport, deliver, parse_retry_after, retry_delay


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """A receiver's verification, written from the Standard Webhooks spec (not from our signer)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(sig, expected)
        for version, _, sig in (
            part.partition(",") for part in headers["webhook-signature"].split(" ")
        )
    )


def test_signature_matches_the_published_test_vector() -> None:
    assert (
        sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            b'{"test": 2432232314}',
        )
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )
    secret = new_webhook_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32


@pytest.mark.parametrize(
    ("address", "what"),
    [
        ("10.1.2.3", "private"), ("192.168.0.10", "private"), ("172.16.5.4", "private"), ("127.0.0.1", "loopback"),
        ("::1", "loopback"), ("169.254.10.1", "link-local"), ("fe80::1", "link-local"), ("fd12::1", "private"),
        ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "not a globally routable"), ("0.0.0.0", "unicast"), ("224.0.0.1", "unicast"),
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str, what: str) -> None:
    why = address_refusal(ipaddress.ip_address(address), allow_private=False)
    assert why is not None and what in why


def test_operator_allowance_opens_private_ranges_but_never_metadata() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    assert address_refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True) is not None
    assert address_refusal(ipaddress.ip_address("93.184.216.34"), allow_private=False) is None
    for url in (
        "ftp://example.com/x",
        "http://user:pw@example.com/",
        "http://metadata.google.internal/x",
        "https://[::1]/x",
    ):
        with pytest.raises(CallbackAddressError):
            check_callback_url(url, allow_private=False)
    assert check_callback_url("https://hooks.example.com/loravet", allow_private=False)


class NoConnections:
    """Fails the test if anything tries to open a socket."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a connection was attempted to a refused address")


@pytest.mark.parametrize(
    "resolved",
    [
        ["10.0.0.7"],
        ["127.0.0.1"],
        ["169.254.169.254"],
        ["fe80::1"],
        ["93.184.216.34", "192.168.1.1"],
    ],
)
def test_a_name_resolving_to_a_forbidden_address_is_refused_before_connecting(
    resolved: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        webhook_delivery,
        "resolve_addresses",
        lambda host, port: [ipaddress.ip_address(a) for a in resolved],
    )
    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", NoConnections())
    with pytest.raises(CallbackAddressError, match=r"hooks\.attacker\.test resolves to"):
        webhook_delivery.post_signed(
            "https://hooks.attacker.test/x", b"{}", {}, allow_private=False, timeout_s=2
        )


def test_connection_goes_to_the_checked_address_with_the_original_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    receiver = WebhookReceiver().start()
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        lookups.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    try:
        monkeypatch.setattr(webhook_delivery, "resolve_addresses", resolver)
        response = webhook_delivery.post_signed(
            f"http://hooks.customer.test:{receiver.port}/in",
            b"{}",
            {},
            allow_private=True,
            timeout_s=5,
        )
        assert response.status_code == 204
        assert lookups == ["hooks.customer.test"]  # resolved once, connected to that address
        assert receiver.received[0].headers["host"] == f"hooks.customer.test:{receiver.port}"
        # loopback without the operator's allowance: refused
        with pytest.raises(CallbackAddressError):
            PinnedAddressTransport(allow_private=False).pin("hooks.customer.test", receiver.port)
    finally:
        receiver.stop()


def _store_event(redis: Redis, job_id: str = "vet_x") -> WebhookEvent:
    event = WebhookEvent(
        id="evt_0123456789abcdef01234567",
        type="report.completed",
        timestamp=datetime.now(UTC),
        data=ReportCompletedData(
            job_id=job_id, report_id="a" * 64, sha256="a" * 64, verdict="review", reasons=["x"]
        ),
    )
    redis_model.store_event(redis, event.id, event.model_dump_json().encode())
    return event


def test_delivery_is_signed_redirects_not_followed_and_410_disables(
    redis_url: str, tmp_path: Path
) -> None:
    redis = Redis.from_url(redis_url)
    receiver = WebhookReceiver().start()
    key = ApiKey("fedcba9876543210")
    sub = create_subscription(
        redis,
        api_settings(redis_url, tmp_path, allow_private_webhooks=True),
        key,
        receiver.url,
        ["report.completed"],
    )
    event = _store_event(redis)
    args = WebhookDeliveryArgs(event_id=event.id, subscription_id=sub.id)
    wsettings = worker_settings(
        redis_url,
        tmp_path,
        allow_private_webhooks=True,
        webhook_retry_schedule=[5, 60],
        webhook_jitter=0.2,
    )
    try:
        entry = deliver(redis, args, wsettings)
        assert entry.outcome == "delivered" and entry.status_code == 204
        got = receiver.received[0]
        assert got.headers["webhook-id"] == event.id
        assert got.headers["content-type"] == "application/json"
        assert verify_standard_webhook(sub.secret, got.headers, got.body)
        assert not verify_standard_webhook(new_webhook_secret(), got.headers, got.body)
        assert json.loads(got.body)["type"] == "report.completed"

        receiver.status, receiver.extra_headers = 302, {"Location": "http://169.254.169.254/latest"}
        entry = deliver(redis, args, wsettings, attempt=1)
        assert entry.outcome == "failed" and "redirects are not followed" in entry.detail
        assert 4 <= entry.next_attempt_in_s <= 6  # 5 s +- 20 % jitter
        assert len(receiver.received) == 2  # the redirect target was never asked

        receiver.status, receiver.extra_headers = 503, {"Retry-After": "120"}
        entry = deliver(redis, args, wsettings, attempt=2)
        assert entry.outcome == "failed" and entry.next_attempt_in_s == 120  # Retry-After honoured
        entry = deliver(redis, args, wsettings, attempt=3)
        assert entry.outcome == "gave_up"

        receiver.status, receiver.extra_headers = 410, {}
        assert deliver(redis, args, wsettings).outcome == "disabled"
        assert deliver(redis, args, wsettings).outcome == "skipped"
        log = [e.outcome for e in redis_model.deliveries(redis, sub.id, 100)]
        assert log == ["skipped", "disabled", "gave_up", "failed", "failed", "delivered"]
    finally:
        receiver.stop()


def test_retry_schedule_and_retry_after_parsing() -> None:
    delays = [retry_delay(a, [5, 30, 120], 0.2) for a in (1, 2, 3, 4)]
    assert (
        4 <= delays[0] <= 6
        and 24 <= delays[1] <= 36
        and 96 <= delays[2] <= 144
        and 96 <= delays[3] <= 144
    )
    assert retry_delay(1, [5], 0.0, retry_after=10**9) == 24 * 3600
    assert parse_retry_after("17") == 17
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert parse_retry_after("soon") is None


def test_transport_errors_are_httpx_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.embedded_redis import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(httpx.ConnectError):
        webhook_delivery.post_signed(
            f"http://127.0.0.1:{port}/", b"{}", {}, allow_private=True, timeout_s=2
        )
