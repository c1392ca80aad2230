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


def test_several_adapters_are_vetted_together_and_a_bad_one_does_not_stop_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A backlog on the command line: one JSON report per line in the order given, each the report
    ``loravet vet`` gives for that adapter alone; an unreadable file is one error line naming it."""
    examples = ROOT / "examples" / "minilm-topics"
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(b"\x80\x04\x95 pickle")
    given = [examples / "clean", bad, examples / "backdoored", examples / "clean"]
    assert main([*map(str, given), "--json", "--batch-size", "2"]) == 2
    out, err = capsys.readouterr()
    reports = [json.loads(line) for line in out.strip().splitlines()]
    errors = err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}: ") and "pickle" in errors[0]
    alone = []
    for path in (examples / "clean", examples / "backdoored"):
        assert main([str(path), "--json"]) == 0
        alone.append(json.loads(capsys.readouterr().out))
    assert [r["verdict"] for r in reports] == [alone[k]["verdict"] for k in (0, 1, 0)]
    assert alone[0]["verdict"] == "accept" and alone[1]["verdict"] != "accept"
    for got, want in zip(reports, [alone[0], alone[1], alone[0]], strict=True):
        assert got["sha256"] == want["sha256"]
        assert [p["value"] for p in got["predictions"]] == pytest.approx(
            [p["value"] for p in want["predictions"]], abs=1e-6
        )
    assert main([str(examples / "clean"), str(examples / "backdoored")]) == 0
    text = capsys.readouterr().out
    assert f"== {examples / 'clean'}" in text
    counts = ", ".join(f"1 {v}" for v in sorted(r["verdict"] for r in alone))  # they differ
    assert text.strip().endswith(f"vetted 2 adapters: {counts}")
    assert main([str(examples / "clean"), str(examples / "clean"), "--config", str(bad)]) == 2
    assert "--config applies to one adapter" in capsys.readouterr().err
