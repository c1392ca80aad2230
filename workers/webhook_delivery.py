"""Signed webhook delivery: Standard Webhooks headers, SSRF-safe connections, retries through RQ.

Each delivery (one event to one subscription) is its own RQ job, so a slow or dead receiver never
holds up vetting. An attempt that fails returns an RQ ``Retry`` with the next delay (exponential
schedule with jitter, longer when the receiver sent ``Retry-After``); RQ's scheduler runs it again.
Every attempt lands in the subscription's delivery log.

SSRF: the callback host is resolved once, every resolved address is checked
(:func:`core.contracts.address_refusal`), and the socket is opened to that checked address while
the ``Host`` header and TLS SNI keep the name (:class:`PinnedAddressTransport`). A second lookup
could answer differently (DNS rebinding), so there is none; redirects are never followed, and proxy
variables are ignored because a proxy would connect on our behalf to an address we never checked.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import httpcore
import httpx
from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from core import redis_model
from core.contracts import (
    WEBHOOK_FUNCTION,
    WEBHOOK_QUEUE,
    DeliveryLogEntry,
    DeliveryOutcome,
    WebhookDeliveryArgs,
    WebhookEvent,
    loravet_version,
)
from core.webhook_security import (
    CallbackAddressError,
    address_refusal,
    check_callback_url,
    sign_webhook,
)
from workers.settings import WorkerSettings

log = logging.getLogger("loravet.webhooks")

MAX_RESPONSE_BYTES = 4096
"""Response bytes read (for the delivery log); the rest is discarded unread."""

MAX_RETRY_AFTER_S = 24 * 3600
"""A receiver's ``Retry-After`` is honoured up to one day."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def resolve_addresses(host: str, port: int) -> list[IPAddress]:
    """All addresses ``host`` resolves to, in resolver order (an IP literal resolves to itself).

    Module-level so tests can replace it; production uses the system resolver, once per attempt.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in seen:
            seen.append(ip)
    return seen


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the one checked address whatever host httpcore asks for."""

    def __init__(self, address: IPAddress, allow_private: bool) -> None:
        self._address = address
        self._allow_private = allow_private
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            str(self._address), port, timeout, local_address, socket_options
        )
        sock = stream.get_extra_info("socket")
        peer = (
            ipaddress.ip_address(sock.getpeername()[0].split("%", 1)[0])
            if sock is not None
            else self._address
        )
        why = address_refusal(peer, allow_private=self._allow_private)
        if why:  # the address the kernel actually connected to, checked once more
            stream.close()
            raise httpcore.ConnectError(f"refused after connect: {why}")
        return stream

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook targets")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class PinnedAddressTransport(httpx.BaseTransport):
    """An httpx transport that resolves once, refuses forbidden addresses and connects to the checked one.

    Raises :class:`~core.contracts.CallbackAddressError` (before any connection) when the name
    resolves to any forbidden address.
    """

    def __init__(
        self, *, allow_private: bool, resolver: Callable[[str, int], list[IPAddress]] | None = None
    ) -> None:
        self.allow_private = allow_private
        self._resolver = resolver

    def pin(self, host: str, port: int) -> IPAddress:
        resolver = self._resolver or resolve_addresses
        try:
            addresses = resolver(host, port)
        except OSError as exc:
            raise httpx.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not addresses:
            raise httpx.ConnectError(f"{host} resolves to no address")
        for ip in addresses:
            why = address_refusal(ip, allow_private=self.allow_private)
            if why:
                raise CallbackAddressError(f"{host} resolves to {ip}: {why}")
        return addresses[0]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        address = self.pin(host, port)
        pool = httpcore.ConnectionPool(
            network_backend=_PinnedBackend(address, self.allow_private), max_connections=1
        )
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            with pool:
                response = pool.handle_request(core_request)
                try:
                    body = b""
                    # httpcore types the stream as sync-or-async; this pool is the sync one
                    for chunk in response.stream:  # type: ignore[union-attr]
                        body += chunk
                        if len(body) >= MAX_RESPONSE_BYTES:
                            break
                finally:
                    response.close()
        except httpcore.TimeoutException as exc:
            raise httpx.TimeoutException(str(exc) or "timed out", request=request) from None
        except httpcore.ConnectError as exc:
            raise httpx.ConnectError(str(exc) or "connection failed", request=request) from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise httpx.TransportError(f"{type(exc).__name__}: {exc}", request=request) from None
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            content=body[:MAX_RESPONSE_BYTES],
            request=request,
        )


def post_signed(
    url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout_s: float
) -> httpx.Response:
    """POST ``body`` to ``url`` through the pinned transport; redirects are returned, not followed."""
    transport = PinnedAddressTransport(allow_private=allow_private)
    timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
    with httpx.Client(
        transport=transport, follow_redirects=False, timeout=timeout, trust_env=False
    ) as client:
        return client.post(url, content=body, headers=headers)


def retry_delay(
    attempt: int, schedule: list[int], jitter: float, retry_after: int | None = None
) -> int:
    """Seconds before attempt ``attempt + 1``: the schedule's entry times a jitter factor, or more
    when the receiver asked for more with ``Retry-After``."""
    base = schedule[min(attempt - 1, len(schedule) - 1)] if schedule else 60
    delay = base * random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return max(1, round(delay))


def parse_retry_after(value: str | None) -> int | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, int((when - datetime.now(UTC)).total_seconds()))


def deliver(
    redis: Redis, args: WebhookDeliveryArgs, settings: WorkerSettings, *, attempt: int = 1
) -> DeliveryLogEntry:
    """Make one delivery attempt and log it. ``next_attempt_in_s`` is set when another is due."""
    sub = redis_model.load_subscription(redis, args.subscription_id)
    body = redis_model.load_event(redis, args.event_id)
    event_type = json.loads(body)["type"] if body else "unknown"
    now = datetime.now(UTC)

    def done(outcome: DeliveryOutcome, detail: str, **extra: Any) -> DeliveryLogEntry:
        entry = DeliveryLogEntry(
            event_id=args.event_id,
            event_type=event_type,
            attempt=attempt,
            at=now,
            outcome=outcome,
            detail=detail,
            **extra,
        )
        if sub is not None:
            redis_model.record_delivery(redis, sub.id, entry)
        log.info(
            "webhook %s -> %s attempt %d: %s (%s)",
            args.event_id,
            args.subscription_id,
            attempt,
            outcome,
            detail,
        )
        return entry

    if sub is None or not sub.active:
        return done("skipped", "subscription deleted or disabled")
    if body is None:
        return done("skipped", "event expired before it could be delivered")
    max_attempts = 1 + len(settings.webhook_retry_schedule)
    try:
        check_callback_url(sub.url, allow_private=settings.allow_private_webhooks)
    except CallbackAddressError as exc:
        return done("refused", str(exc))
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": f"loravet-webhooks/{loravet_version()}",
        "webhook-id": args.event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(sub.secret, args.event_id, timestamp, body),
    }
    t0 = time.perf_counter()
    status: int | None = None
    retry_after = None
    try:
        response = post_signed(
            sub.url,
            body,
            headers,
            allow_private=settings.allow_private_webhooks,
            timeout_s=settings.webhook_timeout_s,
        )
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        detail = f"HTTP {status}"
        if 300 <= status < 400:
            detail += " (redirects are not followed)"
    except CallbackAddressError as exc:
        return done(
            "refused", f"address refused: {exc}", duration_ms=(time.perf_counter() - t0) * 1e3
        )
    except httpx.TimeoutException:
        detail = f"no response within {settings.webhook_timeout_s:g} s"
    except httpx.HTTPError as exc:
        detail = f"{type(exc).__name__}: {exc}"
    duration = round((time.perf_counter() - t0) * 1e3, 3)
    if status is not None and 200 <= status < 300:
        return done("delivered", detail, status_code=status, duration_ms=duration)
    if status == 410:
        redis_model.disable_subscription(redis, sub.id, "receiver answered 410 Gone")
        return done(
            "disabled", f"{detail}: subscription disabled", status_code=status, duration_ms=duration
        )
    if attempt >= max_attempts:
        return done(
            "gave_up",
            f"{detail}; no attempts left ({max_attempts} made)",
            status_code=status,
            duration_ms=duration,
        )
    delay = retry_delay(
        attempt, settings.webhook_retry_schedule, settings.webhook_jitter, retry_after
    )
    return done("failed", detail, status_code=status, duration_ms=duration, next_attempt_in_s=delay)


def delivery_retry(entry: DeliveryLogEntry, settings: WorkerSettings) -> Retry | None:
    """The RQ ``Retry`` a delivery job returns when another attempt is due."""
    if entry.outcome != "failed" or entry.next_attempt_in_s is None:
        return None
    return Retry(max=len(settings.webhook_retry_schedule), interval=[entry.next_attempt_in_s])


def emit_event(
    redis: Redis, event: WebhookEvent, job_id: str, *, webhook_timeout_s: float = 12.0
) -> int:
    """Store the event body once and enqueue one delivery job per matching subscription.

    The subscriptions are those of every API key that asked for this job (the same bytes uploaded by
    two tenants notify both). Delivery job ids are derived from event and subscription, so emitting
    the same event twice (a re-run job) enqueues nothing new. Returns the number of deliveries enqueued.
    """
    body = event.model_dump_json().encode()
    redis_model.store_event(redis, event.id, body)
    queue = Queue(WEBHOOK_QUEUE, connection=redis, serializer=JSONSerializer)
    count = 0
    for key_id in redis_model.interested_keys(redis, job_id):
        for sub in redis_model.subscriptions_of(redis, key_id):
            if not sub.active or event.type not in sub.events:
                continue
            args = WebhookDeliveryArgs(event_id=event.id, subscription_id=sub.id)
            try:
                queue.enqueue_call(
                    WEBHOOK_FUNCTION,
                    args=(args.model_dump(),),
                    job_id=f"whd_{event.id}_{sub.id}",
                    unique=True,
                    timeout=int(webhook_timeout_s * 2 + 30),
                    retry=Retry(
                        max=2
                    ),  # only for a worker that dies mid-attempt; HTTP failures return Retry
                    result_ttl=7 * 24 * 3600,
                    failure_ttl=30 * 24 * 3600,
                    description=f"webhook {event.type} -> {sub.id}",
                )
                count += 1
            except DuplicateJobError:
                continue
    return count
