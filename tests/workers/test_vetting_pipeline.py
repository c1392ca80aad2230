"""The pure pipeline: verdict policy and batch isolation. A stub predictor stands in for a model here
only, in unit tests of pure functions; tests/workers/test_real_predictors.py uses real checkpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from core.contracts import BaseModelEntry, CheckEntry, PredictionEntry
from harness.lora_files import adapter_config, peft_adapter
from lora_io import LoraFileError, LoraSpec
from workers.vetting_pipeline import (
    PredictorFailedError,
    VetInput,
    decide_verdict,
    prediction_entry,
    vet_batch,
    vet_one,
)


@dataclass
class StubConfig:
    predictor_id: str
    task: str
    threshold: float | None
    version: str = "1"
    label_names: list[str] = field(default_factory=list)


@dataclass
class StubPredictor:
    config: StubConfig
    value: float
    calls: list[int] = field(default_factory=list)
    fail_on: int | None = None  # batch sizes above this raise

    def predict(self, adapters: list[Any]) -> np.ndarray:
        self.calls.append(len(adapters))
        if self.fail_on is not None and len(adapters) > self.fail_on:
            raise RuntimeError("device out of memory")
        return np.full((len(adapters), 1), self.value)


@dataclass
class StubRegistry:
    predictors: list[StubPredictor]

    def for_spec(self, spec: LoraSpec) -> list[StubPredictor]:
        return self.predictors


BASE = BaseModelEntry(
    family="bert", title="BERT-style encoder", spec_fingerprint="f" * 16, module_count=4
)


def check(status: str, name: str = "c") -> CheckEntry:
    return CheckEntry(name=name, status=status, detail="d")  # type: ignore[arg-type]


def pred(task: str, value: float, threshold: float | None) -> PredictionEntry:
    return PredictionEntry(
        task=task, predictor_id=f"p-{task}", predictor_version="1", value=value, threshold=threshold
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("checks", "predictions", "counts", "verdict", "codes"),
    [
        ([check("pass")], [pred("harmful", 0.1, 0.5), pred("quality", 0.9, 0.5)], (2, 1), "accept", []),
        ([check("fail")], [pred("harmful", 0.1, 0.5)], (1, 1), "reject", ["check_failed"]),
        ([check("pass")], [pred("harmful", 0.5, 0.5)], (1, 1), "reject", ["harmful"]),
        ([check("pass")], [], (0, 0), "review", ["no_predictor"]),
        ([check("pass")], [pred("quality", 0.9, 0.5)], (1, 0), "review", ["no_predictor"]),
        ([check("warn")], [pred("harmful", 0.1, 0.5)], (1, 1), "review", ["check_warning"]),
        ([check("pass")], [pred("harmful", 0.1, 0.5), pred("quality", 0.2, 0.5)], (2, 1), "review", ["low_quality"]),
        ([check("fail"), check("warn")], [pred("harmful", 0.9, 0.5)], (1, 1), "reject", ["check_failed", "harmful", "check_warning"]),
    ],
)  # fmt: skip
def test_verdict_policy(
    checks: list, predictions: list, counts: tuple[int, int], verdict: str, codes: list[str]
) -> None:
    got, reasons = decide_verdict(
        checks,
        predictions,
        predictor_count=counts[0],
        harmful_predictor_count=counts[1],
        base_model=BASE,
    )
    assert got == verdict
    assert [r.code for r in reasons] == codes
    if "no_predictor" in codes:
        assert "BERT-style encoder" in reasons[0].message and "review" in reasons[0].message


def test_prediction_labels() -> None:
    harmful = prediction_entry(StubConfig("h", "harmful", None), np.array([0.7]))
    assert (harmful.threshold, harmful.label) == (
        0.5,
        "harmful",
    )  # default threshold when none shipped
    quality = prediction_entry(StubConfig("q", "quality", 0.6), np.array([0.4]))
    assert quality.label == "below_threshold"
    member = prediction_entry(
        StubConfig("m", "membership", None, label_names=["code", "math", "chat"]),
        np.array([0.1, 0.8, 0.3]),
    )
    assert member.label == "math" and member.values == {"code": 0.1, "math": 0.8, "chat": 0.3}


def test_one_bad_adapter_does_not_spoil_the_batch() -> None:
    harmful = StubPredictor(StubConfig("h", "harmful", 0.5), 0.2)
    quality = StubPredictor(StubConfig("q", "quality", 0.5), 0.8)
    items = [
        VetInput(peft_adapter(1), adapter_config()),
        VetInput(b"\x80\x04 pickled"),
        VetInput(peft_adapter(2, zero_b=True), adapter_config()),  # untrained: a failed check
        VetInput(peft_adapter(3), adapter_config()),
    ]
    out = vet_batch(items, StubRegistry([harmful, quality]))
    assert isinstance(out[1], LoraFileError) and out[1].kind == "pickle_refused"
    assert [r.verdict for r in (out[0], out[2], out[3])] == ["accept", "reject", "accept"]  # type: ignore[union-attr]
    assert harmful.calls == [3] and quality.calls == [
        3
    ]  # one forward pass per predictor for the batch
    assert out[0].timings.batch_size == 4  # type: ignore[union-attr]
    assert out[0].versions.predictors == ["h@1", "q@1"]  # type: ignore[union-attr]


def test_a_failing_predictor_is_isolated_per_adapter() -> None:
    flaky = StubPredictor(StubConfig("h", "harmful", 0.5), 0.2, fail_on=1)
    out = vet_batch(
        [VetInput(peft_adapter(s), adapter_config()) for s in (1, 2)], StubRegistry([flaky])
    )
    assert flaky.calls == [2, 1, 1]  # the batch failed, then each adapter alone
    assert all(r.verdict == "accept" for r in out)  # type: ignore[union-attr]
    broken = StubPredictor(StubConfig("h", "harmful", 0.5), 0.2, fail_on=0)
    (result,) = vet_batch([VetInput(peft_adapter(1))], StubRegistry([broken]))
    assert isinstance(result, PredictorFailedError) and "h@1" in str(result)


def test_vet_one_raises_for_invalid_input() -> None:
    with pytest.raises(LoraFileError):
        vet_one(b"PK\x03\x04zip", None, None)
    report = vet_one(peft_adapter(1), None, None)
    assert report.verdict == "review" and report.report_id == report.sha256


def test_review_band_and_information_only_quality() -> None:
    from models.calibration import Calibration

    band = Calibration("harmful", 100, reject_threshold=0.8, review_threshold=0.3)
    config = StubConfig("h", "harmful", 0.8)
    config.calibration = band  # type: ignore[attr-defined]
    unsure = prediction_entry(config, np.array([0.5]))
    assert unsure.label == "uncertain" and unsure.review_threshold == 0.3
    verdict, reasons = decide_verdict(
        [check("pass")], [unsure], predictor_count=1, harmful_predictor_count=1, base_model=BASE
    )
    assert verdict == "review" and [r.code for r in reasons] == ["harmful_uncertain"]
    assert "review band (0.300 to 0.800)" in reasons[0].message
    sure = prediction_entry(config, np.array([0.2]))
    assert (
        decide_verdict(
            [check("pass")], [sure], predictor_count=1, harmful_predictor_count=1, base_model=BASE
        )[0]
        == "accept"
    )

    weak = Calibration("quality", 100, half_width=0.1, coverage=0.9, val_r2=0.2, decides=False)
    qconfig = StubConfig("q", "quality", None)
    qconfig.calibration = weak  # type: ignore[attr-defined]
    quality = prediction_entry(qconfig, np.array([0.4]))
    assert quality.interval == pytest.approx((0.3, 0.5)) and quality.interval_coverage == 0.9
    assert not quality.decides and "does not set the verdict" in (quality.note or "")
    verdict, reasons = decide_verdict(
        [check("pass")],
        [sure, quality],
        predictor_count=2,
        harmful_predictor_count=1,
        base_model=BASE,
    )
    assert verdict == "accept" and reasons == []
