"""`loravet train` and `loravet evaluate` end to end on a real (small) zoo, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.predictor import load_predictor
from tests.cli_runs import run_cli
from training import metrics
from training.evaluate_cli import main as evaluate_main
from training.train_cli import main as train_main
from training.zoo_dataset import Zoo, load_task


@pytest.mark.parametrize(
    ("task", "model"), [("harmful", "gl_net"), ("quality", "mlp_svd"), ("membership", "norm_stats")]
)
def test_train_then_evaluate(
    small_zoo: Path, tmp_path: Path, task: str, model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ckpt"
    assert (
        train_main(
            [
                "--zoo",
                str(small_zoo),
                "--task",
                task,
                "--model",
                model,
                "--epochs",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "meta.json"}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["provenance"]["packages"]["torch"].startswith("2.13")
    assert meta["provenance"]["zoo_manifest_sha256"]
    assert meta["val_metrics"]
    predictor = load_predictor(out)
    assert predictor.config.task == task
    if task == "harmful":
        assert 0.0 <= predictor.config.threshold <= 1.0
    capsys.readouterr()
    assert (
        evaluate_main(
            [
                str(out),
                "--zoo",
                str(small_zoo),
                "--split",
                "test",
                "--out",
                str(tmp_path / "m.json"),
                "--by",
                "rank",
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["n"] > 0 and result["metrics"]
    assert sum(g["n"] for g in result["by"]["rank"].values()) <= result["n"]


def test_training_on_augmented_data_runs_and_selects_by_validation(
    small_zoo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mlp"
    argv = ["--zoo", str(small_zoo), "--task", "quality", "--model", "mlp", "--epochs", "4", "--augment-gl", "--out", str(out),
            "--hparams", '{"hidden": 32, "max_rank": 16}']  # fmt: skip
    assert train_main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    losses = [h["val_loss"] for h in meta["history"]]
    assert meta["best_epoch"] == int(np.argmin(losses))


def test_predictions_match_between_train_time_and_reloaded_checkpoint(
    small_zoo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    assert (
        train_main(
            [
                "--zoo",
                str(small_zoo),
                "--task",
                "quality",
                "--model",
                "gl_net",
                "--epochs",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    predictor = load_predictor(out)
    data = load_task(Zoo.open(small_zoo), "val", "quality", spec=predictor.config.spec)
    pred = predictor.predict(data.batch)
    again = load_predictor(out).predict(data.batch)
    np.testing.assert_array_equal(pred, again)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["val_metrics"]["mae"] == pytest.approx(
        metrics.mae(data.y[:, 0], pred[:, 0]), rel=1e-6
    )


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["--zoo", "/nonexistent", "--task", "harmful", "--model", "gl_net", "--out", "x"],
            "manifest.jsonl is missing",
        ),
        (["--zoo", ".", "--task", "beauty", "--model", "gl_net", "--out", "x"], "invalid choice"),
        (
            [
                "--zoo",
                "ZOO",
                "--task",
                "harmful",
                "--model",
                "gl_net",
                "--out",
                "x",
                "--hparams",
                "{bad",
            ],
            "--hparams is not valid JSON",
        ),
        (
            [
                "--zoo",
                "ZOO",
                "--task",
                "harmful",
                "--model",
                "gl_net",
                "--out",
                "x",
                "--train-split",
                "nope",
            ],
            "unknown split 'nope'",
        ),
    ],
)
def test_train_bad_input_is_one_error_line(
    small_zoo: Path, tmp_path: Path, argv: list[str], words: str
) -> None:
    argv = [str(small_zoo) if a == "ZOO" else a for a in argv]
    code, stderr = run_cli(["train", *argv], tmp_path)
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith("error:") and words in stderr
    assert "Traceback" not in stderr


def test_train_bad_input_through_the_real_entry_point(tmp_path: Path) -> None:
    """The same as a user's shell runs it: one ``error:`` line, exit code 2, no traceback."""
    argv = ["--zoo", "/nonexistent", "--task", "harmful", "--model", "gl_net", "--out", "x"]
    proc = subprocess.run(
        [sys.executable, "-m", "loravet", "train", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "manifest.jsonl is missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_metrics_against_known_values() -> None:
    y = np.array([0, 0, 1, 1])
    assert metrics.auroc(y, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert metrics.tpr_at_fpr(y, np.array([0.1, 0.2, 0.3, 0.4]), 0.01) == 1.0
    assert metrics.tpr_at_fpr(y, np.array([0.4, 0.2, 0.3, 0.1]), 0.01) == 0.0
    assert metrics.r2_score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0])) == 1.0
    assert metrics.kendall_tau(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert (
        metrics.per_label_accuracy(np.array([[1, 0], [0, 1]]), np.array([[0.9, 0.2], [0.7, 0.6]]))
        == 0.75
    )
