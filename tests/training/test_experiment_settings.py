"""Settings from an experiment spec: overrides, and `loravet train --settings` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_runs import run_cli
from training.experiment_settings import SettingsError, cell_settings, load_spec, train_settings
from training.train_cli import main as train_main

SPEC = {
    "train": {"epochs": 40, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "patience": 10},
    "models": {
        "gl_net": {
            "hparams": {"hidden": 8, "n_layers": 2, "head_dim": 16},
            "train": {"epochs": 5, "lr": 3e-4},
            "overrides": {"digits/harmful": {"hparams": {"n_layers": 1, "pool": "norms"},
                                             "train": {"epochs": 2}}},
        }
    },
}  # fmt: skip


def test_overrides_apply_per_task_then_per_zoo_and_task() -> None:
    entry = {
        "hparams": {"hidden": 64, "pool": "flatten"},
        "train": {"lr": 3e-4},
        "overrides": {
            "harmful": {"hparams": {"pool": "norms"}},
            "minilm-topics/harmful": {"hparams": {"hidden": 32}, "train": {"lr": 1e-3}},
        },
    }
    assert cell_settings(entry, "digits", "quality") == {
        "hparams": {"hidden": 64, "pool": "flatten"},
        "train": {"lr": 3e-4},
    }
    assert cell_settings(entry, "digits", "harmful")["hparams"] == {
        "hidden": 64,
        "pool": "norms",
    }
    assert cell_settings(entry, "minilm-topics", "harmful") == {
        "hparams": {"hidden": 32, "pool": "norms"},
        "train": {"lr": 1e-3},
    }
    plain = {"hparams": {"hidden": 256}}
    assert cell_settings(plain, "digits", "harmful") == plain  # same key as before


def test_train_settings_merge_shared_train_model_train_and_overrides(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    hparams, train = train_settings(spec, "digits", "harmful", "gl_net")
    assert hparams == {"hidden": 8, "n_layers": 1, "head_dim": 16, "pool": "norms"}
    assert train == {
        "epochs": 2,
        "batch_size": 16,
        "lr": 3e-4,
        "weight_decay": 0.01,
        "patience": 10,
    }
    _, quality = train_settings(spec, "digits", "quality", "gl_net")
    assert quality["epochs"] == 5


def test_models_from_reads_another_specs_models_as_if_copied_in(tmp_path: Path) -> None:
    (tmp_path / "e1.json").write_text(json.dumps({**SPEC, "tuning_note": "chosen on val"}))
    own = {"name": "e2", "train": {"epochs": 40}, "test_ranks": [1, 4]}
    (tmp_path / "e2.json").write_text(json.dumps({**own, "models_from": "e1.json"}))
    copied = {**own, "models": SPEC["models"], "tuning_note": "chosen on val"}
    assert load_spec(tmp_path / "e2.json") == copied  # so a result's key does not change
    assert train_settings(tmp_path / "e2.json", "digits", "harmful", "gl_net")[0]["pool"] == "norms"
    (tmp_path / "both.json").write_text(json.dumps({**SPEC, "models_from": "e1.json"}))
    with pytest.raises(SettingsError, match="both models and models_from"):
        load_spec(tmp_path / "both.json")
    (tmp_path / "dangling.json").write_text(json.dumps({**own, "models_from": "missing.json"}))
    with pytest.raises(SettingsError, match="cannot read settings spec"):
        load_spec(tmp_path / "dangling.json")


def test_shipped_e2_spec_trains_exactly_e1s_models() -> None:
    experiments = Path(__file__).parents[2] / "benchmarks" / "experiments"
    e1, e2 = (
        load_spec(experiments / "e1_models_tasks.json"),
        load_spec(experiments / "e2_rank_generalisation.json"),
    )
    assert e2["models"] == e1["models"] and e2["tuning_note"] == e1["tuning_note"]


def test_train_with_settings_uses_the_spec_and_explicit_flags_win(
    small_zoo: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    out = tmp_path / "ckpt"
    argv = ["--zoo", str(small_zoo), "--task", "harmful", "--model", "gl_net", "--settings", str(spec),
            "--lr", "0.002", "--out", str(out)]  # fmt: skip
    assert train_main(argv) == 0
    meta = json.loads((out / "meta.json").read_text())
    config = meta["train_config"]
    assert (config["epochs"], config["batch_size"], config["lr"]) == (2, 16, 0.002)
    assert config["hparams"] == {"hidden": 8, "n_layers": 1, "head_dim": 16, "pool": "norms"}
    assert len(meta["history"]) <= 2


@pytest.mark.parametrize(
    ("spec_text", "model", "words"),
    [
        (None, "gl_net", "cannot read settings spec"),
        ("{not json", "gl_net", "cannot read settings spec"),
        (json.dumps(SPEC), "mlp", "has no model 'mlp'; it has: gl_net"),
    ],
)
def test_train_settings_errors_are_one_line(
    small_zoo: Path, tmp_path: Path, spec_text: str | None, model: str, words: str
) -> None:
    spec = tmp_path / "spec.json"
    if spec_text is not None:
        spec.write_text(spec_text)
    argv = ["--zoo", str(small_zoo), "--task", "harmful", "--model", model, "--settings", str(spec),
            "--out", str(tmp_path / "x")]  # fmt: skip
    code, stderr = run_cli(["train", *argv], tmp_path)
    assert code == 2
    assert stderr.strip().splitlines()[-1].startswith("error:") and words in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "x").exists()
