"""A small digits zoo, built once per session through the real zoo CLI at a reduced step count."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.cli import main as zoo_main

COUNT = 40


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("training-zoo") / "digits"
    argv = [
        "build",
        "--recipe",
        "digits",
        "--count",
        str(COUNT),
        "--out",
        str(out),
        "--jobs",
        "1",
        "--steps-scale",
        "0.2",
        "--no-progress",
    ]
    assert zoo_main(argv) == 0
    return out
