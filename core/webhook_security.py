"""Where webhooks may go and how they are signed: shared by the API and the workers, standard library only.

The API checks a subscription URL when it is created and the worker checks the address it actually
connects to; both use :func:`address_refusal`, so the two can never disagree. Signing follows
Standard Webhooks v1 (``whsec_`` secrets, ``v1,<base64 HMAC-SHA256>`` signatures).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
from urllib.parse import urlsplit


def new_webhook_secret() -> str:
    """A Standard Webhooks symmetric secret: ``whsec_`` + base64 of 32 random bytes (256 bits)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_webhook(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}``.

    The key is the base64-decoded part of the secret after ``whsec_`` (Standard Webhooks v1).
    """
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
"""Cloud metadata service names: refused always, whatever the operator allows."""

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
"""Cloud metadata service addresses (AWS, ECS, Alibaba, AWS IPv6): refused always."""


class CallbackAddressError(ValueError):
    """A callback URL or address that loravet will not send to; the message says why."""


def address_refusal(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private: bool
) -> str | None:
    """Why ``ip`` may not be connected to, or ``None`` when it may.

    Everything that is not globally routable is refused (private, loopback, link-local, carrier-grade
    NAT, multicast, reserved, unspecified; IPv4-mapped IPv6 is judged as its IPv4 address) unless the
    operator allows private callbacks; cloud metadata addresses are refused even then.
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_global and not ip.is_multicast:
        return None
    if ip.is_unspecified or ip.is_multicast:
        return f"{ip} is not a unicast address"
    if allow_private:
        return None
    for attr, what in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_private", "private"),
    ):
        if getattr(ip, attr):
            return f"{ip} is a {what} address"
    return f"{ip} is not a globally routable address"


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """Validate a webhook URL's shape and, for IP literals, its address; return it normalised.

    Names are resolved and checked again at delivery time, on the address actually connected to.

    Raises:
        CallbackAddressError: with what is wrong and what is accepted.
    """
    if len(url) > 2048:
        raise CallbackAddressError("webhook URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackAddressError(f"webhook URL is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackAddressError(
            f"webhook URL scheme {parts.scheme!r} is not accepted; use https:// (or http://)"
        )
    if parts.username is not None or parts.password is not None:
        raise CallbackAddressError(
            "webhook URL must not carry credentials (user:password@); sign-in is by the webhook signature"
        )
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise CallbackAddressError("webhook URL has no host")
    if port == 0:
        raise CallbackAddressError("webhook URL port 0 is not accepted")
    if host in METADATA_HOSTNAMES:
        raise CallbackAddressError(
            f"webhook host {host!r} is a cloud metadata service and is refused"
        )
    if parts.fragment:
        raise CallbackAddressError("webhook URL must not have a #fragment")
    ip = _ip_literal(host)
    if ip is not None:
        why = address_refusal(ip, allow_private=allow_private)
        if why:
            raise CallbackAddressError(
                f"webhook address refused: {why}; callbacks go to public addresses only "
                "(an operator can allow private ones with LORAVET_API_ALLOW_PRIVATE_WEBHOOKS and LORAVET_WORKER_ALLOW_PRIVATE_WEBHOOKS)"
            )
    return url


_NUMERIC_HOST = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}")


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names without any lookup: a standard literal, or one of the legacy IPv4
    forms resolvers still accept (``2130706433``, ``0x7f000001``, ``127.1``, ``0177.0.0.1``), which
    would otherwise pass as names and only be refused at delivery."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
