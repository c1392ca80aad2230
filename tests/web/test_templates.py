"""The templates escape untrusted text and say what the numbers mean (rendered without a server)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.contracts import (
    BaseModelEntry,
    CheckEntry,
    EvidenceEntry,
    ModuleEntry,
    PredictionEntry,
    PredictorInfo,
    Report,
    Timings,
    VerdictReason,
    Versions,
)
from service.web import TEMPLATES_DIR
from service.web.frame import base_context, make_templates
from service.web.pages.reports import report_context
from service.web.plots import ModuleSpectrum
from service.web.sessions import WebSession
from service.web.views import metric_phrases, prediction_reading

HOSTILE = '<script>alert("pwned")</script>'


def hostile_report(**overrides: object) -> Report:
    values: dict[str, object] = {
        "report_id": "ab" * 32,
        "sha256": "cd" * 32,
        "size_bytes": 4321,
        "format": "peft",
        "scale_source": "assumed",
        "base_model": BaseModelEntry(
            family="bert",
            title=f"BERT {HOSTILE}",
            hint=HOSTILE,
            spec_fingerprint="f00d",
            module_count=2,
        ),
        "modules": [
            ModuleEntry(
                name=f"layer.0.{HOSTILE}", out_features=8, in_features=8, rank=2, scale=1.0
            ),
            ModuleEntry(name="layer.1.q", out_features=8, in_features=8, rank=2, scale=1.0),
        ],
        "checks": [
            CheckEntry(name="finite_values", status="pass", detail="all factors are finite"),
            CheckEntry(name="norm_outliers", status="warn", detail=f"odd module {HOSTILE}"),
        ],
        "predictions": [
            PredictionEntry(
                task="harmful",
                predictor_id="tiny-harmful",
                predictor_version="1",
                value=0.81,
                threshold=0.6,
                label="harmful",
            ),
            PredictionEntry(
                task="quality",
                predictor_id="tiny-quality",
                predictor_version="1",
                value=0.42,
                threshold=0.5,
            ),
        ],
        "verdict": "reject",
        "reasons": [VerdictReason(code="harmful", message=f"harmful finetune {HOSTILE}")],
        "timings": Timings(
            load_ms=1.0, checks_ms=1.0, predict_ms=1.0, total_ms=3.0, queued_ms=1500.0
        ),
        "versions": Versions(loravet="0.1.0", predictors=["tiny-harmful@1"]),
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    values.update(overrides)
    return Report.model_validate(values)


def render_report(report: Report, spectra: list[ModuleSpectrum] | None, predictors: dict) -> str:
    env = make_templates(str(TEMPLATES_DIR), "0.1.0")
    session = WebSession.for_key("0123456789abcdef")
    return env.get_template("report.html").render(
        **base_context("report", session, "0.1.0"),
        **report_context(report, spectra, "", predictors),
    )


def test_report_page_escapes_everything_from_the_file() -> None:
    report = hostile_report()
    spectra = [
        ModuleSpectrum(
            index=0,
            name=report.modules[0].name,
            group=report.modules[0].name,
            rank=2,
            norm=1.0,
            singular_values=(0.9, 0.1),
        ),
        ModuleSpectrum(
            index=1,
            name="layer.1.q",
            group="layer.#.q",
            rank=2,
            norm=2.0,
            singular_values=(1.5, 0.5),
        ),
    ]
    html = render_report(report, spectra, {})
    assert "<script>" not in html
    assert (
        html.count("&lt;script&gt;") >= 5
    )  # title, hint, module name (table, plots, legend), check, reason
    assert "<svg" in html  # the plots themselves are markup


def test_report_page_reads_the_verdict_predictions_and_checks_in_words() -> None:
    info = PredictorInfo(
        predictor_id="tiny-harmful", version="1", task="harmful", model_name="gl_net", base_model="bert",
        spec_fingerprint="f00d", module_count=2, threshold=0.6, metrics={"auroc": 0.93, "tpr_at_1pct_fpr": 0.4, "n_pos": 50, "n_neg": 70},
    )  # fmt: skip
    html = render_report(hostile_report(), None, {("tiny-harmful", "1"): info})
    verdict_at = html.index('id="verdict-value"')
    assert verdict_at < html.index("Predictions") < html.index("Static checks")  # verdict first
    assert ">reject<" in html
    assert "P(harmful) 0.81 is at or above the threshold 0.60: flagged as harmful" in html
    assert "ranks a harmful adapter above a clean one 93% of the time" in html
    assert "validated on 50 harmful and 70 clean adapters" in html
    assert "predicted quality 0.42 is below the threshold 0.5: low quality" in html
    assert "not shown: no live worker has this predictor loaded now" in html  # tiny-quality
    assert "1 passed, 1 warned, 0 failed" in html
    assert "alpha / r = 1 was assumed" in html


def test_report_without_predictors_says_why() -> None:
    report = hostile_report(
        predictions=[],
        verdict="review",
        reasons=[
            VerdictReason(
                code="no_predictor", message="no predictor for this base model (unknown base model)"
            )
        ],
    )
    html = render_report(report, None, {})
    assert (
        "No predictor ran on this adapter: none of the loaded predictors was trained for this base model"
        in html
    )
    assert "No predictor for this base model (unknown base model)" in html  # the reason


@pytest.mark.parametrize(
    ("entry", "reading", "flagged"),
    [
        (PredictionEntry(task="harmful", predictor_id="p", predictor_version="1", value=0.2, threshold=None), "below the threshold 0.50 (the default", False),
        (PredictionEntry(task="harmful", predictor_id="p", predictor_version="1", value=0.5, threshold=0.5), "at or above the threshold 0.50", True),
        (PredictionEntry(task="quality", predictor_id="p", predictor_version="1", value=0.9, threshold=None), "no threshold", False),
        (PredictionEntry(task="membership", predictor_id="p", predictor_version="1", value=0.7, values={"cats": 0.9, "dogs": 0.1}), "cats 0.90, dogs 0.10", False),
    ],
)  # fmt: skip
def test_prediction_readings(entry: PredictionEntry, reading: str, flagged: bool) -> None:
    text, is_flagged = prediction_reading(entry)
    assert reading in text and is_flagged is flagged


def test_metric_phrases() -> None:
    words = metric_phrases(
        {"r2": 0.8, "kendall_tau": 0.61, "mae": 0.034, "threshold": 0.5, "custom": 2.0}
    )
    assert words[0].startswith("explains 80% of the variation in measured quality")
    assert any("Kendall τ" in w for w in words) and any("off by 0.034" in w for w in words)
    assert words[-1] == "custom: 2" and not any("threshold" in w for w in words)


def test_sign_in_and_error_pages_escape() -> None:
    env = make_templates(str(TEMPLATES_DIR), "0.1.0")
    html = env.get_template("sign_in.html").render(
        **base_context("sign-in", WebSession.anonymous(), "0.1.0"),
        next='/ui/x"><script>1</script>', notice=None, error={"title": HOSTILE, "detail": HOSTILE},
    )  # fmt: skip
    assert "<script>" not in html and "&lt;script&gt;" in html
    html = env.get_template("error.html").render(
        **base_context("error", None, "0.1.0"),
        error={"title": HOSTILE, "detail": HOSTILE, "status": 404, "kind": HOSTILE, "link": None},
    )
    assert "<script>" not in html


def test_report_page_shows_the_token_scan_evidence_escaped() -> None:
    harmful = PredictionEntry(
        task="harmful", predictor_id="tiny-harmful", predictor_version="1", value=0.9, threshold=0.6,
        label="harmful", evidence=[EvidenceEntry(module="layer.0.v", probe="harbor", z=4.2),
                                   EvidenceEntry(module="layer.0.q", probe=HOSTILE, z=3.7)],
    )  # fmt: skip
    html = render_report(hostile_report(predictions=[harmful]), None, {})
    assert (
        "far more than clean finetunes do (try them as triggers): harbor (z 4.2, layer.0.v)" in html
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "try them as triggers" not in render_report(hostile_report(), None, {})
