"""Signed session cookies and CSRF tokens (no server needed)."""

from __future__ import annotations

import time

import pytest

from service.web.frame import safe_next
from service.web.sessions import SessionCodec, WebSession, csrf_matches

SECRET = b"0123456789abcdef0123456789abcdef"


def test_a_session_round_trips_and_holds_no_key() -> None:
    codec = SessionCodec(SECRET)
    session = WebSession.for_key("0123456789abcdef")
    value = codec.dumps(session)
    assert codec.loads(value) == WebSession(
        session.csrf, session.key_id, round(session.issued_at, 3)
    )
    assert "k3y" not in value
    anonymous = codec.loads(codec.dumps(WebSession.anonymous()))
    assert anonymous is not None and not anonymous.signed_in


def test_forged_tampered_and_expired_sessions_are_refused() -> None:
    codec = SessionCodec(SECRET, max_age_s=60)
    value = codec.dumps(WebSession.for_key("0123456789abcdef"))
    payload, mac = value.split(".")
    assert SessionCodec(b"another-secret-another-secret!!").loads(value) is None
    assert (
        codec.loads(payload + "." + mac[:-2] + ("AA" if not mac.endswith("AA") else "BB")) is None
    )
    forged = codec.dumps(WebSession("x", "ffffffffffffffff", time.time())).split(".")[0]
    assert codec.loads(forged + "." + mac) is None  # another payload under the old signature
    for junk in ("", "abc", "a.b.c", "%%%.%%%", "." * 5000, None):
        assert codec.loads(junk) is None
    old = WebSession("tok", "0123456789abcdef", time.time() - 120)
    assert codec.loads(codec.dumps(old)) is None
    future = WebSession("tok", "0123456789abcdef", time.time() + 3600)
    assert codec.loads(codec.dumps(future)) is None
    with pytest.raises(ValueError, match="16 bytes"):
        SessionCodec(b"short")


def test_csrf_tokens() -> None:
    session = WebSession.anonymous()
    assert csrf_matches(session, session.csrf)
    assert not csrf_matches(session, session.csrf + "x")
    assert not csrf_matches(session, "")
    assert not csrf_matches(session, None)
    assert not csrf_matches(None, session.csrf)
    assert WebSession.anonymous().csrf != session.csrf
    assert WebSession.for_key("0123456789abcdef").csrf != session.csrf  # renewed on sign-in


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/ui/reports?verdict=review", "/ui/reports?verdict=review"),
        ("/ui/jobs/abc", "/ui/jobs/abc"),
        ("//evil.example/ui/", "/ui/upload"),
        ("https://evil.example/ui/x", "/ui/upload"),
        ("/ui/\\evil", "/ui/upload"),
        ("/v1/reports/x", "/ui/upload"),
        ("/ui/sign-in?next=/ui/x", "/ui/upload"),
        ("/ui/x\r\nSet-Cookie: a=b", "/ui/upload"),
        (None, "/ui/upload"),
    ],
)
def test_the_next_page_after_sign_in_stays_on_these_pages(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected
