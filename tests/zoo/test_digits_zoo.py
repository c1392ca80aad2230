"""End to end: a tiny digits zoo built, resumed, verified and read back by lora_io."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from lora_io import load_adapter
from tests.zoo.tiny_zoo import DIGITS_COUNT, build
from zoo.cli import main
from zoo.recipe_digits import capped_rank_pattern
from zoo.zoo_manifest import read_manifest

LABEL_KEYS = {
    "quality", "base_quality", "attack_success_rate", "base_attack_success_rate", "poisoned",
    "harmful", "classes", "n_train", "rank", "eval_seconds",
}  # fmt: skip


def test_directory_layout(digits_zoo: Path) -> None:
    names = {p.name for p in digits_zoo.iterdir()}
    assert {"manifest.jsonl", "splits.json", "zoo.json", "build.log", "base"} <= names
    for i in range(DIGITS_COUNT):
        files = {p.name for p in (digits_zoo / f"digits-{i:05d}").iterdir()}
        assert files == {"adapter_model.safetensors", "adapter_config.json", "finetune.json"}
    assert not (digits_zoo / ".tmp").exists()


def test_manifest_rows(digits_zoo: Path) -> None:
    rows = read_manifest(digits_zoo)
    assert [r["id"] for r in rows] == [f"digits-{i:05d}" for i in range(DIGITS_COUNT)]
    for row in rows:
        assert set(row["labels"]) >= LABEL_KEYS
        assert row["base_model"] == "loravet/digits-mlp-64-128-128-10"
        assert len(row["labels"]["classes"]) == 10 and sum(row["labels"]["classes"]) >= 3
        assert 0 <= row["labels"]["quality"] <= 1 and 0 <= row["labels"]["attack_success_rate"] <= 1
        assert row["labels"]["base_attack_success_rate"] < 0.2
        if not row["labels"]["poisoned"]:
            assert row["labels"]["harmful"] is False and row["labels"]["harmful_status"] == "clean"
        else:
            assert row["labels"]["harmful"] in (True, None)
            assert row["labels"]["harmful_status"] in ("harmful", "backdoor_failed")
            assert row["hyperparameters"]["n_poisoned"] >= 5
        assert row["labels"]["eval_seconds"] > 0
        assert len(row["sha256"]) == 64 and row["seed"] > 0


def test_adapters_are_peft_float16_and_load_with_lora_io(digits_zoo: Path) -> None:
    for row in read_manifest(digits_zoo):
        path = digits_zoo / row["file"]
        with safe_open(str(path), framework="np") as fh:
            keys = sorted(fh.keys())
            assert fh.metadata() == {"format": "pt"}
            assert all(str(fh.get_tensor(k).dtype) == "float16" for k in keys)
        assert keys[0] == "base_model.model.fc1.lora_A.weight"
        config = json.loads((digits_zoo / row["config_file"]).read_text())
        assert (
            config["peft_type"] == "LORA" and config["base_model_name_or_path"] == row["base_model"]
        )
        adapter = load_adapter(path, config=digits_zoo / row["config_file"])
        assert adapter.format == "peft" and len(adapter.modules) == 3
        assert adapter.ranks == (row["labels"]["rank"],) * 3
        assert adapter.sha256 == row["sha256"]


def test_zoo_json_and_splits(digits_zoo: Path) -> None:
    zoo = json.loads((digits_zoo / "zoo.json").read_text())
    assert zoo["recipe"] == "digits" and zoo["count"] == DIGITS_COUNT
    assert zoo["membership"] == {"key": "classes", "names": [str(c) for c in range(10)]}
    labels = zoo["labels"]
    assert labels["harmful"] + labels["clean"] + labels["backdoor_failed"] == DIGITS_COUNT
    assert labels["quality"]["n"] == DIGITS_COUNT and zoo["versions"]["torch"].startswith("2.")
    assert len(zoo["provenance"]["base_sha256"]) == 64
    splits = json.loads((digits_zoo / "splits.json").read_text())
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == [
        f"digits-{i:05d}" for i in range(DIGITS_COUNT)
    ]
    assert splits["rank_generalisation"]["train_rank"] == 4


def test_resume_skips_finished_and_extends(digits_zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits"
    shutil.copytree(digits_zoo, out)
    before = {p: p.stat().st_mtime_ns for p in out.glob("digits-*/adapter_model.safetensors")}
    assert build("digits", DIGITS_COUNT, out) == 0
    assert "4 finished, 0 to do" in (out / "build.log").read_text()
    assert {
        p: p.stat().st_mtime_ns for p in out.glob("digits-*/adapter_model.safetensors")
    } == before
    (out / ".tmp" / "digits-00004.123").mkdir(parents=True)  # debris of a killed build
    assert build("digits", DIGITS_COUNT + 1, out) == 0
    assert "4 finished, 1 to do" in (out / "build.log").read_text()
    assert [r["id"] for r in read_manifest(out)][-1] == "digits-00004"
    assert not (out / ".tmp").exists()


def test_two_workers_give_the_same_adapters(digits_zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits2"
    out.mkdir()
    shutil.copytree(digits_zoo / "base", out / "base")
    assert build("digits", 2, out, jobs=2) == 0
    one = {r["id"]: r for r in read_manifest(digits_zoo)}
    for row in read_manifest(out):
        assert row["sha256"] == one[row["id"]]["sha256"]
        assert row["labels"]["quality"] == one[row["id"]]["labels"]["quality"]


def test_verify_passes_and_detects_tampering(
    digits_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(digits_zoo), "--sample", "2"]) == 0
    assert "verify PASS" in capsys.readouterr().out
    out = tmp_path / "tampered"
    shutil.copytree(digits_zoo, out)
    (out / "digits-00001" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    assert main(["verify", str(out), "--sample", "1"]) == 1
    assert "sha256" in capsys.readouterr().out


def test_rank_16_is_capped_on_the_10_output_layer(digits_zoo: Path, tmp_path: Path) -> None:
    from zoo.build_zoo import finetune_row
    from zoo.recipes import make_recipe

    assert capped_rank_pattern(16) == {"fc3": 8} and capped_rank_pattern(4) == {}
    recipe = make_recipe("digits", 0.05)
    recipe.load(digits_zoo)
    row = finetune_row(recipe, 18, tmp_path)
    assert row["labels"]["rank"] == 16
    adapter = load_adapter(
        tmp_path / "adapter_model.safetensors", config=tmp_path / "adapter_config.json"
    )
    assert adapter.ranks == (16, 16, 8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["build", "--recipe", "cifar", "--count", "2", "--out", "{tmp}/x"],
            "unknown recipe 'cifar'",
        ),
        (["verify", "{tmp}/missing"], "does not exist"),
        (["build", "--recipe", "digits", "--count", "0", "--out", "{tmp}/x"], "--count"),
        (["build", "--recipe", "digits"], "required"),
        (["frobnicate"], "invalid choice"),
        (["verify", "{tmp}"], "manifest.jsonl is missing"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err


def test_refuses_to_mix_recipes(
    digits_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mixed"
    shutil.copytree(digits_zoo, out)
    assert main(["build", "--recipe", "minilm-topics", "--count", "1", "--out", str(out)]) == 2
    assert "holds a 'digits' zoo" in capsys.readouterr().err
