"""``loravet vet``: a readable report or JSON; invalid input is one ``error:`` line and status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lora_files import adapter_config, peft_adapter
from workers.vet_cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_text_and_json_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = tmp_path / "adapter_model.safetensors"
    adapter.write_bytes(peft_adapter(1))
    config = tmp_path / "adapter_config.json"
    config.write_bytes(adapter_config())
    assert (
        main([str(adapter), "--config", str(config), "--predictors", str(tmp_path / "none")]) == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("verdict: REVIEW")
    assert "no predictor for this base model" in text and "BERT-style encoder" in text
    assert main([str(adapter), "--json", "--predictors", str(tmp_path / "none")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "review" and report["scale_source"] == "assumed"


def test_a_peft_adapter_directory_is_vetted_with_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``save_pretrained`` writes a directory; vetting it reads the config too (scale from config)."""
    (tmp_path / "adapter_model.safetensors").write_bytes(peft_adapter(1))
    (tmp_path / "adapter_config.json").write_bytes(adapter_config())
    assert main([str(tmp_path), "--json", "--predictors", str(tmp_path / "none")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scale_source"] == "adapter_config"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), "--predictors", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "directory without a .safetensors file" in err[0]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\x80\x04\x95 pickle", "pickle"),
        (b"GGUF\x03\x00", "GGUF"),
        (b"{}", "too short"),
        (None, "no such file"),
    ],
)
def test_invalid_input_is_one_error_line(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "input.safetensors"
    if content is not None:
        path.write_bytes(content)
    out = subprocess.run(
        [sys.executable, "-m", "loravet.cli", "vet", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in out.stderr


def test_cuda_without_a_usable_gpu_is_one_error_line(capsys) -> None:
    import pytest
    import torch

    from workers.vet_cli import main as vet_main_

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples" / "minilm-topics" / "clean"
    assert vet_main_([str(example), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device cuda: no usable CUDA device") and err.count("\n") == 1
