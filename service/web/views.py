"""What the pages say: reports, predictions, metrics and jobs turned into plain words and rows.

Pure functions of the API's own models (no Redis, no request), so they are unit-tested directly.
Everything returned here is plain text; the templates escape it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.contracts import PredictionEntry, PredictorInfo, Report
from service.web.plots import ModuleSpectrum, fmt

TASK_TITLES = {
    "harmful": "Harmful finetune",
    "quality": "Quality",
    "membership": "Training data",
}

VERDICT_MEANING = {
    "accept": "Every check and predictor ran and nothing flagged this adapter.",
    "review": "A person should look at this adapter before it is published: see why below.",
    "reject": "Do not publish this adapter: a check failed or a predictor flagged it as harmful.",
}

STATUS_ICONS = {"pass": "✔", "warn": "⚠", "fail": "✖"}

SCALE_WORDS = {
    "adapter_config": "from the uploaded adapter_config.json (lora_alpha / r)",
    "metadata_config": "from the LoRA config embedded in the file's metadata",
    "alpha_keys": "from the alpha values stored in the file",
    "kohya_default": "kohya's default (alpha = rank), as no alpha was stored",
    "assumed": "unknown: no adapter_config.json and no alpha in the file, so alpha / r = 1 was assumed",
}

JOB_STATUS_TEXT = {
    "queued": "Waiting for a worker",
    "running": "Being vetted",
    "finished": "Finished",
    "failed": "Failed",
}

JOB_STATUS_DETAIL = {
    "queued": "The adapter was received and checked; it waits in the queue for a worker. This page updates by itself.",
    "running": "A worker is reading the adapter and running the checks and predictors. This page updates by itself.",
    "finished": "The report is ready.",
    "failed": "The adapter could not be vetted; no report was written, so nothing about it reads as clean.",
}


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def when(moment: datetime | None) -> str:
    """A timestamp for people: UTC, to the second."""
    if moment is None:
        return "–"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def metric_phrases(metrics: dict[str, float]) -> list[str]:
    """Validation metrics in plain words, most telling first; unknown ones as ``name: value``."""
    m = dict(metrics)
    out: list[str] = []
    if "auroc" in m:
        v = m.pop("auroc")
        out.append(
            f"ranks a harmful adapter above a clean one {v:.0%} of the time (AUROC {v:.2f}; 50% is chance)"
        )
    if "tpr_at_1pct_fpr" in m:
        v = m.pop("tpr_at_1pct_fpr")
        out.append(
            f"catches {v:.0%} of harmful adapters when it may wrongly flag 1 clean adapter in 100 (TPR at 1% FPR)"
        )
    if "accuracy" in m:
        v = m.pop("accuracy")
        out.append(f"right about {v:.0%} of held-out adapters at its threshold (accuracy)")
    if "per_label_accuracy" in m:
        v = m.pop("per_label_accuracy")
        out.append(f"right on {v:.0%} of labels (per-label accuracy)")
    if "r2" in m:
        v = m.pop("r2")
        out.append(f"explains {max(v, 0.0):.0%} of the variation in measured quality (R² {v:.2f})")
    if "kendall_tau" in m:
        v = m.pop("kendall_tau")
        out.append(
            f"orders adapters by quality with rank agreement {v:.2f} (Kendall τ; 0 is chance, 1 is perfect)"
        )
    if "mae" in m:
        v = m.pop("mae")
        out.append(f"off by {fmt(v)} on average (mean absolute error)")
    n_pos, n_neg = m.pop("n_pos", None), m.pop("n_neg", None)
    if n_pos is not None and n_neg is not None:
        out.append(f"validated on {int(n_pos)} harmful and {int(n_neg)} clean adapters")
    m.pop("threshold", None)  # shown in its own column
    out.extend(f"{name}: {fmt(value)}" for name, value in sorted(m.items()))
    return out


def prediction_reading(p: PredictionEntry) -> tuple[str, bool]:
    """What one prediction means against its threshold, and whether it counts against the adapter."""
    if p.task == "harmful":
        threshold = 0.5 if p.threshold is None else p.threshold
        note = "" if p.threshold is not None else " (the default, as the predictor ships none)"
        if p.value >= threshold:
            return (
                f"P(harmful) {p.value:.2f} is at or above the threshold {threshold:.2f}{note}: flagged as harmful",
                True,
            )
        if p.review_threshold is not None and p.value >= p.review_threshold:
            return (
                f"P(harmful) {p.value:.2f} is in the review band {p.review_threshold:.2f} to "
                f"{threshold:.2f}, where the predictor cannot tell clean from harmful reliably: "
                "a person should look",
                True,
            )
        return (
            f"P(harmful) {p.value:.2f} is below the threshold {threshold:.2f}{note}: not flagged",
            False,
        )
    if p.task == "quality":
        interval = (
            f" ({p.interval_coverage:.0%} interval {fmt(p.interval[0])} to {fmt(p.interval[1])})"
            if p.interval is not None and p.interval_coverage is not None
            else ""
        )
        if not p.decides:
            return (
                f"predicted quality {fmt(p.value)}{interval}; this predictor explains too little of "
                "measured quality to decide anything, so it is shown for information only",
                False,
            )
        if p.threshold is None:
            return (
                f"predicted quality {fmt(p.value)}{interval}; no threshold, so it informs but does not decide",
                False,
            )
        if p.value < p.threshold:
            return (
                f"predicted quality {fmt(p.value)} is below the threshold {fmt(p.threshold)}: low quality",
                True,
            )
        return (
            f"predicted quality {fmt(p.value)} is at or above the threshold {fmt(p.threshold)}",
            False,
        )
    if p.values:
        top = sorted(p.values.items(), key=lambda kv: -kv[1])[:5]
        listed = ", ".join(f"{name} {value:.2f}" for name, value in top)
        return f"most likely in the training data: {listed}", False
    return f"value {fmt(p.value)}" + (f" ({p.label})" if p.label else ""), False


def prediction_rows(
    report: Report, predictors: dict[tuple[str, str], PredictorInfo]
) -> list[dict[str, Any]]:
    rows = []
    for p in report.predictions:
        reading, flagged = prediction_reading(p)
        info = predictors.get((p.predictor_id, p.predictor_version))
        rows.append(
            {
                "task_title": TASK_TITLES.get(p.task, p.task),
                "predictor": f"{p.predictor_id}@{p.predictor_version}",
                "value": f"{p.value:.2f}" if p.task != "quality" else fmt(p.value),
                "threshold": (f"{p.threshold:.2f}" if p.task != "quality" else fmt(p.threshold))
                if p.threshold is not None
                else ("0.50 (default)" if p.task == "harmful" else "none"),
                "reading": reading,
                "evidence": [f"{e.probe} (z {e.z:.1f}, {e.module})" for e in p.evidence or []],
                "flagged": flagged,
                "metrics": metric_phrases(info.metrics) if info is not None else [],
                "metrics_note": "none shipped with this predictor"
                if info is not None
                else "not shown: no live worker has this predictor loaded now",
            }
        )
    return rows


def predictor_rows(predictors: Sequence[PredictorInfo]) -> list[dict[str, Any]]:
    return [
        {
            "predictor_id": p.predictor_id,
            "version": p.version,
            "model_name": p.model_name,
            "task_title": TASK_TITLES.get(p.task, p.task),
            "base_model": p.base_model or "unnamed base model",
            "spec_fingerprint": p.spec_fingerprint,
            "module_count": p.module_count,
            "threshold": fmt(p.threshold)
            if p.threshold is not None
            else ("0.5 (default)" if p.task == "harmful" else "–"),
            "metrics": metric_phrases(p.metrics),
            "device": p.device,
        }
        for p in predictors
    ]


def check_summary(report: Report) -> str:
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in ("pass", "warn", "fail")}
    return f"{counts['pass']} passed, {counts['warn']} warned, {counts['fail']} failed"


def timings_text(report: Report) -> str:
    t = report.timings
    parts = [f"{t.total_ms:.0f} ms to vet"]
    if t.queued_ms is not None:
        parts.append(f"{t.queued_ms / 1000:.1f} s from upload to start")
    if t.batch_size > 1:
        parts.append(f"in a batch of {t.batch_size}")
    return ", ".join(parts)


def module_rows(report: Report, spectra: Sequence[ModuleSpectrum] | None) -> list[dict[str, Any]]:
    by_name = {s.name: s for s in spectra or ()}
    rows = []
    for i, m in enumerate(report.modules):
        s = by_name.get(m.name)
        if s is None:
            peers = "–"
        elif s.z is None:
            peers = "too few peers to compare"
        else:
            peers = f"z {s.z:+.1f}" + (" · stands out" if s.stands_out else "")
        rows.append(
            {
                "number": i + 1,
                "name": m.name,
                "shape": f"{m.out_features} × {m.in_features}",
                "rank": m.rank,
                "scale": fmt(m.scale),
                "norm": fmt(s.norm) if s else "–",
                "sigma1": fmt(s.singular_values[0]) if s and s.singular_values else "–",
                "share": f"{s.top_share:.0%}" if s and s.top_share is not None else "–",
                "peers": peers,
                "odd": bool(s and s.stands_out),
            }
        )
    return rows


def why_text(report: Report) -> str:
    """One line for the recent-reports table."""
    if not report.reasons:
        return "nothing flagged"
    first = report.reasons[0].message
    if len(first) > 140:
        first = first[:139] + "…"
    more = f" (+{len(report.reasons) - 1} more)" if len(report.reasons) > 1 else ""
    return first + more


PROBLEM_HINTS = {
    "pickle_refused": "Save the adapter as safetensors instead: PEFT's save_pretrained() does by default "
    "(safe_serialization=True), and safetensors.torch.save_file() converts a state dict.",
    "not_safetensors": "loravet reads LoRA adapters in the safetensors format only.",
    "too_large": "Ask the operator to raise LORAVET_API_MAX_UPLOAD_BYTES if adapters this large are expected.",
    "rate_limited": "Wait a little and try again.",
    "job_quota_exceeded": "Wait for some of your uploads to finish, then try again.",
    "queue_full": "The service is busy; try again in a few minutes.",
    "session_required": "Sign in again, then upload.",
    "csrf_failed": "Reload the page, then upload again.",
}
