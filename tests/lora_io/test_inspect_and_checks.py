"""`loravet inspect` as a user runs it, the static checks, and the no-torch import boundary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lora_io
from harness.lora_files import clip_text_modules, kohya_lora, safetensors_bytes
from lora_io.inspect_cli import main as inspect_main


@pytest.fixture
def kohya_file(tmp_path: Path) -> Path:
    tensors = kohya_lora(clip_text_modules(12, 768), "lora_te", 4, 4.0, np.random.default_rng(0))
    path = tmp_path / "te_lora.safetensors"
    path.write_bytes(safetensors_bytes(tensors))
    return path


def test_import_lora_io_does_not_import_torch() -> None:
    code = "import sys, lora_io, lora_io.inspect_cli, lora_io.checks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_inspect_json(kohya_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert inspect_main([str(kohya_file), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "kohya"
    assert doc["base_model"]["family"] == "sd1"
    assert len(doc["sha256"]) == 64
    assert len(doc["modules"]) == 72
    assert set(doc["modules"][0]) >= {"name", "out_features", "in_features", "rank", "scale"}
    assert {c["name"] for c in doc["checks"]} >= {
        "finite_values",
        "trained_factors",
        "rank_consistency",
        "norm_outliers",
    }


def test_inspect_text_through_the_console_script(kohya_file: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loravet", "inspect", str(kohya_file)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Stable Diffusion 1.x" in proc.stdout
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj" in proc.stdout


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x80\x04\x95junk", "pickle"),
        (b"not a lora at all", "header"),
        (safetensors_bytes({"m.lora_A.weight": np.ones((2, 5), "float32")}), "no lora_B"),
    ],
)
def test_inspect_invalid_input_is_one_error_line(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    proc = subprocess.run(
        [sys.executable, "-m", "loravet", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert words in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_inspect_missing_file_and_bad_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert inspect_main([str(tmp_path / "nope.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    with pytest.raises(SystemExit) as info:
        inspect_main(["--bogus"])
    assert info.value.code == 2


def test_norm_outlier_is_flagged() -> None:
    tensors = kohya_lora(
        clip_text_modules(8, 64), "lora_te", 4, 4.0, np.random.default_rng(1), dtype="float32"
    )
    key = "lora_te_text_model_encoder_layers_3_self_attn_v_proj.lora_up.weight"
    clean = lora_io.load_adapter(safetensors_bytes(tensors))
    assert {c.name: c.status for c in lora_io.run_checks(clean)}["norm_outliers"] == "pass"
    tensors[key] = tensors[key] * 1000
    check = {
        c.name: c for c in lora_io.run_checks(lora_io.load_adapter(safetensors_bytes(tensors)))
    }["norm_outliers"]
    assert check.status == "warn"
    assert "layers.3.self_attn.v_proj" in check.detail


def test_non_finite_is_a_failed_check_when_kept() -> None:
    a = np.ones((2, 5), "float32")
    a[0, 0] = np.nan
    adapter = lora_io.load_adapter(
        safetensors_bytes({"m.lora_A.weight": a, "m.lora_B.weight": np.ones((6, 2), "float32")}),
        allow_non_finite=True,
    )
    assert {c.name: c.status for c in lora_io.run_checks(adapter)}["finite_values"] == "fail"


def test_unknown_cli_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "loravet", "frobnicate"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown command")


def test_the_digits_zoo_base_is_named_though_it_has_no_public_family() -> None:
    from lora_io import LoraSpec, ModuleShape, recognise_base_model

    spec = LoraSpec(
        (ModuleShape("fc1", 128, 64), ModuleShape("fc2", 128, 128), ModuleShape("fc3", 10, 128))
    )
    base = recognise_base_model(spec)
    assert base.family == "unknown" and "digits-mlp" in (base.hint or "")
    other = LoraSpec(
        (ModuleShape("fc1", 128, 64), ModuleShape("fc2", 128, 128), ModuleShape("fc3", 9, 128))
    )
    assert recognise_base_model(other).hint is None


def test_peer_scores_compare_like_with_like() -> None:
    from lora_io.checks import module_group, peer_scores

    assert module_group("model.layers.12.self_attn.q_proj") == "model.layers.#.self_attn.q_proj"
    assert module_group("down_blocks.0.attentions.1.to_k") == "down_blocks.#.attentions.#.to_k"
    names = [f"layers.{i}.q" for i in range(5)] + ["layers.0.v"]
    scores = peer_scores([1, 1.1, 0.9, 1.0, 50, 3], names)
    assert scores[5] is None  # a group of one is not compared
    assert scores[4] is not None and scores[4].stands_out
    assert all(s is not None and abs(s.z) < 3 and not s.stands_out for s in scores[:4])


def test_norm_outliers_needs_a_large_ratio_not_only_a_large_z() -> None:
    """Six peers with nearly equal norms make any spread a huge z: a 3x module (the largest ratio
    on any clean minilm-topics finetune was 3.2) is a normal finetune, a 20x one is flagged."""
    from lora_io.checks import NORM_OUTLIER_Z, peer_scores

    names = [f"layers.{i}.q" for i in range(6)]
    three_x = peer_scores([1.0, 1.01, 0.99, 1.0, 1.02, 3.0], names)[5]
    assert three_x is not None and three_x.z > NORM_OUTLIER_Z and not three_x.stands_out
    twenty_x = peer_scores([1.0, 1.01, 0.99, 1.0, 1.02, 20.0], names)[5]
    assert twenty_x is not None and twenty_x.stands_out
