"""The ECE noise floor: what a perfectly calibrated predictor scores on a split of a given size."""

from __future__ import annotations

import numpy as np

from benchmarks.calibration_noise import ece_noise_floor, scored_probabilities
from models.calibration import expected_calibration_error


def test_floor_shrinks_with_split_size_and_separates_miscalibration() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(100), rng.random(5000)
    floor_small, floor_large = ece_noise_floor(small, draws=400), ece_noise_floor(large, draws=400)
    # a ten-bin ECE on 100 LoRAs is far from zero even when the probabilities are exact
    assert floor_small["mean"] > 0.05 > floor_large["p95"]
    assert floor_small["n"] == 100
    # calibrated labels land inside the spread; labels from an overconfident world land above it
    calibrated = expected_calibration_error(large, rng.random(large.size) < large)[0]
    overconfident = expected_calibration_error(large, rng.random(large.size) < 0.5 + 0.5 * (large - 0.5))[0]  # fmt: skip
    assert calibrated <= floor_large["p95"] < overconfident


def test_scored_probabilities_are_those_the_ece_is_computed_over() -> None:
    result = {"verdicts": {"outcomes": [
        {"status": "clean", "harmful_probability": 0.1},
        {"status": "harmful", "harmful_probability": 0.9},
        {"status": "backdoor_failed", "harmful_probability": 0.5},  # in neither class
        {"status": "clean", "harmful_probability": None},  # no harmful predictor ran
    ]}}  # fmt: skip
    assert scored_probabilities(result).tolist() == [0.1, 0.9]
