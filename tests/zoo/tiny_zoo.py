"""Build tiny zoos through the real CLI (``zoo.cli.main``) for the zoo tests.

``--steps-scale 0.05`` cuts training to a few steps; everything else (base model, data, labels,
file layout) is the real recipe.
"""

from __future__ import annotations

from pathlib import Path

from zoo.cli import main

TINY_SCALE = "0.05"
DIGITS_COUNT = 4
MINILM_COUNT = 4
CAUSAL_LM_COUNT = 2


def build(recipe: str, count: int, out: Path, jobs: int = 1) -> int:
    """``loravet zoo build`` at the tiny scale; returns the exit code."""
    argv = ["build", "--recipe", recipe, "--count", str(count), "--out", str(out)]
    return main([*argv, "--jobs", str(jobs), "--steps-scale", TINY_SCALE, "--no-progress"])
