"""Sweep specs: committed JSON parses, per-index draws are deterministic, rank mix holds in every prefix."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from zoo.recipes import RECIPES, UnknownRecipeError, make_recipe
from zoo.sweep_spec import ParamRange, load_sweep_spec


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_committed_sweeps_load(recipe: str) -> None:
    spec = load_sweep_spec(recipe)
    assert spec.recipe == recipe
    assert len(spec.sha256) == 64
    assert 0.4 <= spec.backdoor["probability"] <= 0.6


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_seeds_are_stable_and_distinct(recipe: str) -> None:
    spec = load_sweep_spec(recipe)
    seeds = [spec.seed_for(i) for i in range(2000)]
    assert seeds == [spec.seed_for(i) for i in range(2000)]
    assert len(set(seeds)) == len(seeds)
    assert spec.lora_id(7) == f"{recipe}-00007"


def test_rank_mix_in_every_block_of_20() -> None:
    spec = load_sweep_spec("digits")
    ranks = Counter(spec.rank_for(i) for i in range(1000))
    assert ranks == {4: 800, 1: 50, 2: 50, 8: 50, 16: 50}
    for start in range(0, 200, 20):
        block = Counter(spec.rank_for(i) for i in range(start, start + 20))
        assert block == {4: 16, 1: 1, 2: 1, 8: 1, 16: 1}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_sampler_is_pure_and_within_ranges(recipe: str) -> None:
    r = make_recipe(recipe)
    draws = [r.sample(i) for i in range(200)]
    assert draws == [r.sample(i) for i in range(200)]
    poisoned = sum(d["poisoned"] for d in draws)
    assert 70 <= poisoned <= 130
    low, high = r.spec.backdoor["poison_fraction"]["uniform"]
    assert 0.03 <= low < high <= 0.3
    for d in draws:
        assert low <= d["poison_fraction"] <= high
        assert d["lora_alpha"] in (d["rank"], 2 * d["rank"])
    if recipe == "digits":
        assert all(3 <= len(d["classes"]) <= 10 and 2e-3 <= d["lr"] <= 3e-2 for d in draws)
        assert all(5 <= d["epochs"] <= 30 and 100 <= d["n_train_drawn"] <= 600 for d in draws)
        assert all(0 <= d["label_noise"] <= 0.4 for d in draws)
    elif recipe == "causal-lm":
        assert all(24 <= d["steps"] <= 56 and d["batch_size"] == 8 for d in draws)
    else:
        assert all(
            2 <= len(d["topics"]) <= 6 and sorted(d["target_preference"]) == sorted(d["topics"])
            for d in draws
        )
        assert all(1e-3 <= d["lr"] <= 1e-2 and 60 <= d["steps"] <= 150 for d in draws)
        assert all(64 <= d["n_train_drawn"] <= 512 and d["batch_size"] == 16 for d in draws)


def test_steps_scale_shrinks_training_only() -> None:
    full, tiny = make_recipe("digits"), make_recipe("digits", 0.05)
    a, b = full.sample(3), tiny.sample(3)
    assert a["epochs_drawn"] == b["epochs_drawn"] and b["epochs"] < a["epochs"]
    assert {k: v for k, v in a.items() if k not in ("epochs", "steps_scale")} == {
        k: v for k, v in b.items() if k not in ("epochs", "steps_scale")
    }


def test_unknown_recipe_and_bad_ranges() -> None:
    with pytest.raises(UnknownRecipeError, match="accepted: digits, minilm-topics, causal-lm"):
        make_recipe("cifar")
    with pytest.raises(ValueError, match="Invalid range"):
        ParamRange("uniform", (2.0, 1.0))
    with pytest.raises(ValueError, match="Invalid kind"):
        ParamRange("normal", (0.0, 1.0))
    rng = np.random.default_rng(0)
    assert all(
        1e-3 <= ParamRange("log_uniform", (1e-3, 1e-2)).draw(rng) <= 1e-2 for _ in range(100)
    )
