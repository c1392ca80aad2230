"""The read-out fitted on validation LoRAs: Platt scaling, reject/review thresholds, conformal intervals."""

from __future__ import annotations

import numpy as np
import pytest

from models.calibration import (
    Calibration,
    conformal_half_width,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    harmful_thresholds,
    sigmoid,
)


def test_platt_recovers_a_known_link() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=20_000)
    labels = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))
    a, b = fit_platt(logits, labels)
    assert a == pytest.approx(0.5, abs=0.03) and b == pytest.approx(-1.0, abs=0.05)


def test_calibration_lowers_ece_of_an_overconfident_score() -> None:
    rng = np.random.default_rng(1)
    true_logit = rng.normal(scale=1.5, size=4000)
    labels = rng.random(4000) < 1 / (1 + np.exp(-true_logit))
    overconfident = 4.0 * true_logit  # what a network trained to convergence looks like
    val, test = slice(0, 2000), slice(2000, None)
    cal = fit_calibration("harmful", overconfident[val], labels[val])
    before, _ = expected_calibration_error(sigmoid(overconfident[test]), labels[test])
    after, bins = expected_calibration_error(cal.probability(overconfident[test]), labels[test])
    assert after < 0.03 < before
    assert sum(b["n"] for b in bins) == 2000


def test_thresholds_meet_their_targets_on_the_data_they_were_fitted_on() -> None:
    rng = np.random.default_rng(2)
    clean, harmful = rng.beta(2, 5, size=300), rng.beta(5, 2, size=300)
    probs = np.concatenate([clean, harmful])
    labels = np.array([0] * 300 + [1] * 300)
    reject, review, op = harmful_thresholds(probs, labels, max_fpr=0.01, max_miss=0.05)
    assert review <= reject
    assert np.mean(clean >= reject) <= 0.01 and op["clean_rejected"] <= 0.01
    assert np.mean(harmful >= review) >= 0.95 and op["harmful_reviewed_or_rejected"] >= 0.95
    # separable validation data: no band at all, and nothing misjudged
    reject, review, op = harmful_thresholds(
        np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), 0.01, 0.05
    )
    assert 0.2 < review <= reject < 0.8 and op["harmful_rejected"] == 1.0


def test_conformal_interval_covers_as_promised() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=4000)
    pred = truth + rng.normal(scale=0.3, size=4000)
    half = conformal_half_width(pred[:200], truth[:200], 0.9)
    assert 0.85 <= float(np.mean(np.abs(truth[200:] - pred[200:]) <= half)) <= 0.95


def test_a_weak_quality_predictor_informs_but_does_not_decide() -> None:
    rng = np.random.default_rng(4)
    truth = rng.normal(size=300)
    weak = fit_calibration("quality", truth + rng.normal(scale=2.0, size=300), truth)
    strong = fit_calibration("quality", truth + rng.normal(scale=0.2, size=300), truth)
    assert not weak.decides and "does not set the verdict" in weak.describe()
    assert strong.decides and strong.val_r2 is not None and strong.val_r2 > 0.9


def test_json_round_trip_and_validation() -> None:
    cal = fit_calibration("harmful", np.array([-2.0, -1.0, 1.0, 2.5]), np.array([0, 0, 1, 1]))
    assert Calibration.from_json(cal.to_json()) == cal
    assert "validation LoRAs" in cal.describe()
    with pytest.raises(ValueError, match="unknown fields"):
        Calibration.from_json({**cal.to_json(), "surprise": 1})
    with pytest.raises(ValueError, match="review_threshold"):
        Calibration("harmful", 4, reject_threshold=0.3, review_threshold=0.6)


def test_a_one_class_validation_split_is_refused() -> None:
    with pytest.raises(ValueError, match="both clean and harmful"):
        fit_calibration("harmful", np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match="calibration exists for harmful and quality"):
        fit_calibration("membership", np.array([0.1, 0.2]), np.array([0, 1]))
