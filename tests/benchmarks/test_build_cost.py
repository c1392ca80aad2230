"""The build-cost estimate: rebuilt LoRAs match their records, and the estimate is the record scaled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import build_cost


def test_rebuilt_sample_scales_the_recorded_total(
    small_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_cost, "RESULTS", tmp_path)
    assert build_cost.main([str(small_zoo), "--sample", "3", "--seed", "1"]) == 0
    result = json.loads((tmp_path / "digits.json").read_text())

    assert result["sample"] == 3 and len(result["per_lora"]) == 3
    # same recipe, same seeds, same machine: the rebuilt labels are the recorded ones
    assert all(p["labels_equal"] for p in result["per_lora"])
    recorded = sum(p["recorded_cpu_seconds"] for p in result["per_lora"])
    quiet = sum(p["quiet_cpu_seconds"] for p in result["per_lora"])
    assert result["quiet_over_recorded"] == pytest.approx(quiet / recorded, abs=1e-3)
    low, high = result["ratio_95"]
    assert low <= result["quiet_over_recorded"] <= high
    hours = result["recorded_cpu_seconds_mean"] * quiet / recorded * result["loras_in_zoo"] / 3600
    assert result["quiet_cpu_hours_whole_zoo"] == pytest.approx(hours, abs=0.01)
    assert result["provenance"]["git_sha"]


def test_interval_is_a_point_when_every_lora_scales_alike() -> None:
    recorded = np.array([10.0, 20.0, 40.0])
    low, high = build_cost.ratio_interval(recorded, 0.5 * recorded, seed=0)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "name one zoo directory"),
        (["{tmp}"], "is not a built zoo"),
        (["{tmp}", "--sample", "x"], "--sample needs a whole number"),
        (["{tmp}", "--jobs", "2"], "unknown option --jobs"),
    ],
)
def test_bad_arguments_get_one_error_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_cost.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and err.count("\n") == 1
