"""The report page (verdict first, predictions beside their validation, checks, module plots) and
the recent-reports listing."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request, Response
from markupsafe import Markup

from core.contracts import PredictorInfo, Report, is_sha256_hex
from core.redis_model import VERDICTS
from lora_io import LoraFileError, load_adapter
from service.dependencies import ServiceState
from service.error_handlers import Problem
from service.operations import reports
from service.operations.predictors import live_predictors
from service.web.frame import (
    WEB_PREFIX,
    PageSession,
    page_router,
    render,
    service_state,
    web_state,
)
from service.web.plots import (
    ModuleSpectrum,
    group_colours,
    module_spectra,
    norm_chart_svg,
    singular_value_chart_svg,
    uses_log_scale,
)
from service.web.views import (
    SCALE_WORDS,
    STATUS_ICONS,
    VERDICT_MEANING,
    check_summary,
    human_bytes,
    module_rows,
    prediction_rows,
    timings_text,
    when,
    why_text,
)

RECENT_PAGE_SIZE = 25
SPECTRA_CACHE_SIZE = 32
LEGEND_GROUPS = 12

router = page_router()


def spectra_for(request: Request, report: Report) -> tuple[list[ModuleSpectrum] | None, str]:
    """Module spectra from the stored adapter (cached per report: reports never change)."""
    web, state = web_state(request), service_state(request)
    with web.lock:
        if report.report_id in web.spectra:
            web.spectra.move_to_end(report.report_id)
            return web.spectra[report.report_id], ""
    stored = reports.stored_adapter(state, report)
    if stored is None:
        return None, "The adapter file is no longer in the store, so its modules cannot be plotted."
    data, config = stored
    try:
        adapter = load_adapter(
            data,
            config=config,
            allow_non_finite=True,
            max_file_bytes=max(len(data), state.settings.max_upload_bytes),
        )
    except LoraFileError as exc:
        return None, f"The stored adapter could not be read again for the plots: {exc.message}"
    spectra = module_spectra(adapter)
    with web.lock:
        web.spectra[report.report_id] = spectra
        while len(web.spectra) > SPECTRA_CACHE_SIZE:
            web.spectra.popitem(last=False)
    return spectra, ""


def _predictors_by_id(state: ServiceState) -> dict[tuple[str, str], PredictorInfo]:
    _, predictors = live_predictors(state.redis)
    return {(p.predictor_id, p.version): p for p in predictors}


@router.get("/reports/{report_id}")
def report_page(report_id: str, request: Request, signed: PageSession) -> Response:
    session, _ = signed
    state = service_state(request)
    if not is_sha256_hex(report_id):
        raise Problem(
            404,
            "No such report",
            "report ids are sha256 digests (64 lowercase hex characters).",
            kind="report_not_found",
        )
    report = reports.stored_report(state, report_id)
    if report is None:
        job_id = reports.pending_job(state, report_id)
        link = (
            {"href": f"{WEB_PREFIX}/jobs/{quote(job_id, safe='')}", "text": "See its job"}
            if job_id
            else None
        )
        raise Problem(
            404,
            "No report yet",
            f"there is no report {report_id}: it was not uploaded, or its scan has not finished, or it failed.",
            kind="report_not_found",
            link=link,
        )
    spectra, plots_note = spectra_for(request, report)
    predictors = _predictors_by_id(state) if report.predictions else {}
    return render(
        request,
        "report.html",
        page="report",
        session=session,
        **report_context(report, spectra, plots_note, predictors),
    )


def report_context(
    report: Report,
    spectra: list[ModuleSpectrum] | None,
    plots_note: str,
    predictors: dict[tuple[str, str], PredictorInfo],
) -> dict[str, Any]:
    """Everything the report template shows, from the report, its module spectra and predictors."""
    plots = None
    if spectra:
        colours = group_colours(spectra)
        odd = [s for s in spectra if s.stands_out]
        plots = {
            "norm_svg": Markup(norm_chart_svg(spectra)),  # built with every text escaped
            "sv_svg": Markup(singular_value_chart_svg(spectra)),
            "norm_log": uses_log_scale([s.norm for s in spectra]),
            "odd": bool(odd),
            "odd_text": (
                f"{len(odd)} module(s) stand out from the same module in other layers: "
                + ", ".join(f"#{s.index + 1} {s.name}" for s in odd[:8])
                + (f" and {len(odd) - 8} more" if len(odd) > 8 else "")
            )
            if odd
            else "No module stands out from the same module in other layers"
            + ("." if any(s.z is not None for s in spectra) else " (too few layers to compare)."),
            "legend": list(colours.items())[:LEGEND_GROUPS],
            "legend_more": max(0, len(colours) - LEGEND_GROUPS),
        }
    elif spectra is not None:
        plots_note = "The adapter has no modules to plot."
    return {
        "report": report,
        "created": when(report.created_at),
        "verdict_meaning": VERDICT_MEANING[report.verdict],
        "predictions": prediction_rows(report, predictors),
        "no_prediction_note": (
            f"none of the loaded predictors was trained for this base model "
            f"({report.base_model.title}, spec {report.base_model.spec_fingerprint})"
        ),
        "check_summary": check_summary(report),
        "status_icons": STATUS_ICONS,
        "scale_words": SCALE_WORDS.get(report.scale_source, report.scale_source),
        "size": human_bytes(report.size_bytes),
        "timings": timings_text(report),
        "plots": plots,
        "plots_note": plots_note,
        "modules": module_rows(report, spectra),
        "api_report_url": f"/v1/reports/{report.report_id}",
    }


# ------------------------------------------------------------------------------------- recent
def _query_int(value: str | None, default: int) -> int:
    try:
        return max(1, int(value)) if value is not None else default
    except ValueError:
        return default


@router.get("/reports")
def recent_page(request: Request, signed: PageSession) -> Response:
    session, _ = signed
    state = service_state(request)
    verdict = request.query_params.get("verdict") or None
    if verdict not in (None, *VERDICTS):
        verdict = None
    page = _query_int(request.query_params.get("page"), 1)
    recent = reports.recent_reports(state, verdict, page, RECENT_PAGE_SIZE)
    counts, total = recent.counts, recent.total
    rows = []
    for report in recent.reports:
        rows.append(
            {
                "created": when(report.created_at),
                "verdict": report.verdict,
                "href": f"{WEB_PREFIX}/reports/{report.report_id}",
                "short_id": report.report_id[:16] + "…",
                "format": report.format,
                "size": human_bytes(report.size_bytes),
                "base_model": report.base_model.title,
                "modules": len(report.modules),
                "why": why_text(report),
            }
        )

    def href(v: str | None, n: int = 1) -> str:
        query = {k: val for k, val in (("verdict", v), ("page", str(n) if n > 1 else None)) if val}
        return f"{WEB_PREFIX}/reports" + (f"?{urlencode(query)}" if query else "")

    page_count = max(1, -(-int(total) // RECENT_PAGE_SIZE))
    filters = [
        {
            "label": "All",
            "verdict": None,
            "count": counts[None],
            "href": href(None),
            "current": verdict is None,
        }
    ]
    filters += [
        {
            "label": v.capitalize(),
            "verdict": v,
            "count": counts[v],
            "href": href(v),
            "current": verdict == v,
        }
        for v in VERDICTS
    ]
    return render(
        request,
        "recent.html",
        page="recent",
        session=session,
        rows=rows,
        filters=filters,
        caption=f"{int(total)} report(s)"
        + (f" with verdict {verdict}" if verdict else "")
        + ", newest first",
        page_number=page,
        page_count=page_count,
        newer_href=href(verdict, page - 1) if page > 1 else None,
        older_href=href(verdict, page + 1) if page < page_count else None,
        empty_note=(
            f"No report with verdict {verdict} yet."
            if verdict
            else "No report yet: upload an adapter."
        ),
    )
