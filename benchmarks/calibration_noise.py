"""How large an ECE a perfectly calibrated predictor shows on a test split of a given size.

Why: expected calibration error over ten bins is biased upwards on small samples: each bin's
harmful share is a proportion of a handful of LoRAs, so even a predictor whose probabilities are
exactly right scores well above zero. minilm-topics' test split has 98 LoRAs, several bins hold five;
there the bias alone is larger than the 0.05 goal. This module measures that floor by simulation:
keep the predictor's own test probabilities, draw each label from Bernoulli(p) (a world in which
they are calibrated), and compute the ECE of every draw. An observed ECE inside that spread is
indistinguishable from perfect calibration at this sample size; one above its 95th percentile is
evidence of miscalibration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.calibration import expected_calibration_error


def ece_noise_floor(
    probs: np.ndarray, bins: int = 10, draws: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Mean and 95th percentile of the ECE of ``draws`` label sets drawn from ``probs`` themselves."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    eces = np.array(
        [expected_calibration_error(p, rng.random(p.shape) < p, bins)[0] for _ in range(draws)]
    )
    return {"mean": float(eces.mean()), "p95": float(np.quantile(eces, 0.95)), "n": int(p.size)}


def scored_probabilities(e6_result: dict[str, Any]) -> np.ndarray:
    """The calibrated P(harmful) of every clean and harmful test LoRA in an E6 result (the LoRAs its
    ECE is computed over; backdoors that did not take are in neither class)."""
    return np.array(
        [
            o["harmful_probability"]
            for o in e6_result["verdicts"]["outcomes"]
            if o["status"] in ("clean", "harmful") and o.get("harmful_probability") is not None
        ],
        dtype=np.float64,
    )
