"""Stored reports, the recent-reports listing and the stored adapters behind them.

Reports live in the content store under their report id; the recent-reports index is in Redis
(``core.redis_model``). A report that is not stored yet may have a job: its id is the hint both the
API's 404 and the report page give.
"""

from __future__ import annotations

from dataclasses import dataclass

from core import redis_model
from core.contracts import Report, is_sha256_hex
from service.dependencies import ServiceState
from service.error_handlers import Problem


def check_report_id(report_id: str) -> None:
    """404 for anything that cannot be a report id (so a typo never reaches the store)."""
    if not is_sha256_hex(report_id):
        raise Problem(
            404,
            "Not found",
            "report ids are sha256 digests (64 lowercase hex characters)",
            kind="report_not_found",
        )


def report_bytes(state: ServiceState, report_id: str) -> bytes | None:
    """The stored report's JSON, exactly as the worker wrote it; None when not stored."""
    try:
        return state.store.get_bytes("reports", report_id)
    except (FileNotFoundError, ValueError):
        return None


def stored_report(state: ServiceState, report_id: str) -> Report | None:
    body = report_bytes(state, report_id)
    return None if body is None else Report.model_validate_json(body)


def pending_job(state: ServiceState, report_id: str) -> str | None:
    """The id of the job last enqueued for this content (a report not stored yet may be coming)."""
    return redis_model.submission_job(state.redis, report_id)


def stored_adapter(state: ServiceState, report: Report) -> tuple[bytes, bytes | None] | None:
    """The adapter bytes (and config) a report was computed from; None once they left the store."""
    try:
        data = state.store.get_bytes("adapters", report.sha256)
        config = (
            state.store.get_bytes("configs", report.config_sha256) if report.config_sha256 else None
        )
    except FileNotFoundError:
        return None
    return data, config


@dataclass(frozen=True)
class RecentReports:
    """One page of the newest reports (optionally of one verdict) and the size of every index."""

    reports: list[Report]
    total: int
    """Reports in the index asked for (all, or one verdict)."""
    counts: dict[str | None, int]
    """Per index: ``None`` for all, then one entry per verdict."""


def recent_reports(
    state: ServiceState, verdict: str | None, page: int, page_size: int
) -> RecentReports:
    """Page ``page`` (from 1) of the newest reports; ids whose report is gone are skipped."""
    counts, ids = redis_model.recent_reports(
        state.redis, verdict, (page - 1) * page_size, page_size
    )
    reports = [
        r for r in (stored_report(state, i) for i in ids if is_sha256_hex(i)) if r is not None
    ]
    return RecentReports(reports=reports, total=counts[verdict], counts=counts)
