"""A vetting job waits out an unavailable content store instead of spending its retries, and gives
up (raising the store's error for RQ to retry) only after ``store_outage_wait_s``."""

from __future__ import annotations

import pytest

from core.content_store import StoreUnavailableError
from workers import jobs


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "STORE_BACKOFF_S", (0.01,))


def test_the_action_is_tried_again_until_the_store_answers() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailableError("s3 at http://x: connection refused")
        return "report"

    assert jobs.wait_out_store_outage(flaky, wait_s=5) == "report"
    assert len(calls) == 3


def test_an_outcome_in_hand_is_used_first_and_a_returned_outage_is_waited_out() -> None:
    outages = [StoreUnavailableError("down")]
    assert jobs.wait_out_store_outage(lambda: "x", 5, first="ready") == "ready"
    got = jobs.wait_out_store_outage(
        lambda: outages.pop() if outages else "report", 5, first=StoreUnavailableError("down")
    )
    assert got == "report" and outages == []


def test_a_put_that_returns_nothing_counts_as_done() -> None:
    assert jobs.wait_out_store_outage(lambda: None, 5) is None


def test_it_gives_up_after_the_wait_with_the_store_error() -> None:
    def down() -> None:
        raise StoreUnavailableError("s3 at http://x: connection refused")

    with pytest.raises(StoreUnavailableError, match="connection refused"):
        jobs.wait_out_store_outage(down, wait_s=0.05)
