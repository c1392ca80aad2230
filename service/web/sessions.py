"""Browser sessions for the pages: a signed cookie that names the API key and holds a CSRF token.

Signing in with an API key gives a cookie ``loravet_session`` (HttpOnly, SameSite=Lax, Secure over
HTTPS) whose value is ``base64url(json).base64url(hmac-sha256)``. It holds only the key's id (the
first 16 hex digits of its sha256, the same id that names it in quotas and logs), a random per-session
CSRF token and the time it was issued: never the key itself. A session is refused when its signature
is wrong, when it is older than :data:`SESSION_MAX_AGE_S`, or when its key is no longer accepted by
the instance (a key removed from the configuration ends its sessions at once).

Every POST from a page carries the session's CSRF token (a hidden form field, or the
``X-CSRF-Token`` header from the upload script) and is refused when it does not match. The sign-in
form itself is protected the same way: visiting it gives an anonymous session with a token, and a
new token is issued on sign-in.

Standard library only (``hmac``), so sessions need no extra dependency.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "loravet_session"
SESSION_MAX_AGE_S = 8 * 3600
"""How long a session lasts after sign-in (a working day); then the pages ask for the key again."""

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

_CONTEXT = b"loravet-web-session-v1."


@dataclass(frozen=True)
class WebSession:
    """What the session cookie holds. ``key_id`` is ``None`` before sign-in."""

    csrf: str
    key_id: str | None
    issued_at: float

    @property
    def signed_in(self) -> bool:
        return self.key_id is not None

    @classmethod
    def anonymous(cls) -> WebSession:
        return cls(csrf=secrets.token_urlsafe(32), key_id=None, issued_at=time.time())

    @classmethod
    def for_key(cls, key_id: str) -> WebSession:
        """A fresh session (and a fresh CSRF token) for a key that just signed in."""
        return cls(csrf=secrets.token_urlsafe(32), key_id=key_id, issued_at=time.time())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Signs and verifies session cookies with one secret (HMAC-SHA256)."""

    def __init__(self, secret: bytes, max_age_s: int = SESSION_MAX_AGE_S) -> None:
        if len(secret) < 16:
            raise ValueError("the session secret must be at least 16 bytes")
        self._key = hashlib.sha256(_CONTEXT + secret).digest()
        self.max_age_s = max_age_s

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: WebSession) -> str:
        body = {"c": session.csrf, "k": session.key_id, "t": round(session.issued_at, 3)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def loads(self, value: str | None, *, now: float | None = None) -> WebSession | None:
        """The session in a cookie value, or ``None`` when absent, forged, malformed or expired."""
        if not value or len(value) > 4096 or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        try:
            if not hmac.compare_digest(self._mac(payload), mac):
                return None
            body = json.loads(_unb64(payload))
        except (ValueError, UnicodeError, binascii.Error):
            return None
        if not isinstance(body, dict):
            return None
        csrf, key_id, issued = body.get("c"), body.get("k"), body.get("t")
        if not isinstance(csrf, str) or not csrf or not isinstance(issued, int | float):
            return None
        if key_id is not None and not isinstance(key_id, str):
            return None
        now = time.time() if now is None else now
        if issued > now + 60 or now - issued > self.max_age_s:
            return None
        return WebSession(csrf=csrf, key_id=key_id, issued_at=float(issued))


def csrf_matches(session: WebSession | None, presented: str | None) -> bool:
    """True when ``presented`` is this session's CSRF token (constant-time comparison)."""
    if session is None or not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())
