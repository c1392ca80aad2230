"""Combining model families: scale-free, and scored against validation statistics only."""

from __future__ import annotations

import numpy as np

from benchmarks.architecture_ensemble import standardised_sum


def _families(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"a": rng.normal(size=(3, n)), "b": 40.0 * rng.normal(size=(2, n)) + 7.0}


def test_a_family_on_a_larger_logit_scale_does_not_outweigh_the_other() -> None:
    rng = np.random.default_rng(0)
    val, test = _families(rng, 50), _families(rng, 30)
    weights = {"a": 1.0, "b": 1.0}
    base = standardised_sum(test, val, weights)
    rescaled = {"a": test["a"], "b": 0.01 * test["b"] - 3.0}
    rescaled_val = {"a": val["a"], "b": 0.01 * val["b"] - 3.0}
    assert np.allclose(standardised_sum(rescaled, rescaled_val, weights), base)
    alone = standardised_sum(test, val, {"a": 1.0})
    assert not np.allclose(base, alone)  # the second family does count


def test_each_lora_is_scored_the_same_alone_or_among_others() -> None:
    """The standardisation comes from validation, so a score does not depend on its neighbours."""
    rng = np.random.default_rng(1)
    val, test = _families(rng, 50), _families(rng, 30)
    weights = {"a": 1.0, "b": 0.5}
    together = standardised_sum(test, val, weights)
    one = standardised_sum({k: v[:, 4:5] for k, v in test.items()}, val, weights)
    assert np.allclose(one, together[4:5])
