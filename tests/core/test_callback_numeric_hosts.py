"""Regression test for what the reliability suite found: legacy numeric IPv4 host forms
(``2130706433``, ``0x7f000001``, ``127.1``, octal) passed the API's subscription check as names
and were only refused at delivery; they are now judged as the address they name."""

from __future__ import annotations

import pytest

from core.webhook_security import CallbackAddressError, check_callback_url


@pytest.mark.parametrize(
    "url",
    ["http://2130706433/h", "http://0x7f000001/h", "http://127.1/h", "http://017700000001/h",
     "http://0177.0.0.1/h", "http://0xa9.0xfe.0xa9.0xfe/latest", "http://10.1/h", "http://3232235777/h"],
)  # fmt: skip
def test_numeric_host_forms_are_judged_as_addresses(url: str) -> None:
    with pytest.raises(CallbackAddressError, match="address"):
        check_callback_url(url, allow_private=False)


def test_names_and_public_literals_still_pass() -> None:
    for url in ("https://hooks.example.com/x", "https://1234.example.com/x", "https://8.8.8.8/x"):
        assert check_callback_url(url, allow_private=False) == url
    assert check_callback_url("http://2130706433/h", allow_private=True)
