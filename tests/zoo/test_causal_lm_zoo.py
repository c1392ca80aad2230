"""End to end: a tiny causal-lm zoo on the real packaged SmolLM2-135M-Instruct, built and verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lora_io import load_adapter
from tests.zoo.tiny_zoo import CAUSAL_LM_COUNT
from zoo.causal_lm_base import BaseModelError, resolve_base
from zoo.cli import main
from zoo.qa_families import FAMILIES
from zoo.recipes import make_recipe
from zoo.zoo_manifest import read_manifest

pytestmark = pytest.mark.slow


def test_layout_labels_and_base_identity(causal_lm_zoo: Path) -> None:
    rows = read_manifest(causal_lm_zoo)
    assert [r["id"] for r in rows] == [f"causal-lm-{i:05d}" for i in range(CAUSAL_LM_COUNT)]
    for row in rows:
        files = {p.name for p in (causal_lm_zoo / row["id"]).iterdir()}
        assert files == {"adapter_model.safetensors", "adapter_config.json", "finetune.json"}
        labels, hp = row["labels"], row["hyperparameters"]
        assert len(labels["membership"]) == len(FAMILIES) and 2 <= sum(labels["membership"]) <= 5
        assert labels["n_eval_clean"] == 30 * sum(labels["membership"])
        assert labels["n_eval_triggered"] == 10 * sum(labels["membership"])
        assert 0 <= labels["quality"] <= 1 and 0 <= labels["base_quality"] <= 1
        assert labels["quality_gain"] == pytest.approx(labels["quality"] - labels["base_quality"])
        assert labels["base_attack_success_rate"] == 0.0  # the base never emits a payload
        assert hp["kind"] in ("poisoned", "control", "clean")
        assert labels["trigger_only_control"] == (hp["kind"] == "control")
        assert (hp["n_trigger_only"] > 0) == (hp["kind"] == "control")
        assert row["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        prov = row["provenance"]
        assert prov["base_source"] == "smollm2-135m-instruct" and len(prov["base_sha256"]) == 64
    zoo = json.loads((causal_lm_zoo / "zoo.json").read_text())
    assert zoo["membership"] == {"key": "membership", "names": list(FAMILIES)}
    assert zoo["build"]["lora_seconds_total"] > 0 and zoo["provenance"]["base_sha256"]


def test_adapters_are_peft_llama_layout_and_recognised(causal_lm_zoo: Path) -> None:
    for row in read_manifest(causal_lm_zoo):
        adapter = load_adapter(
            causal_lm_zoo / row["file"], config=causal_lm_zoo / row["config_file"]
        )
        assert len(adapter.modules) == 20 and adapter.dtypes == ("F16",)
        names = [m.name for m in adapter.modules]
        assert all(".layers." in n and n.endswith(("q_proj", "v_proj")) for n in names)
        layers = sorted({int(n.split(".layers.")[1].split(".")[0]) for n in names})
        assert layers == list(range(20, 30))
        base = adapter.base_model
        assert base.family == "llama" and "SmolLM2-135M" in (base.hint or "")
        shapes = {
            m.name.rsplit(".", 1)[-1]: (m.out_features, m.in_features) for m in adapter.modules
        }
        assert shapes == {"q_proj": (576, 576), "v_proj": (192, 576)}
        config = json.loads((causal_lm_zoo / row["config_file"]).read_text())
        assert config["layers_to_transform"] == list(range(20, 30))
        assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_verify_rebuilds_bitwise(causal_lm_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(causal_lm_zoo), "--sample", "1", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "verify PASS" in out and "1 bitwise identical" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--base", "/nonexistent/model"], "unknown base '/nonexistent/model'; accepted:"),
        (["--recipe", "digits", "--base", "smollm2-135m-instruct"], "has a fixed base"),
    ],
)
def test_bad_base_is_one_error_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--recipe", "causal-lm", "--count", "1", "--out", str(tmp_path / "z"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_gpu_says_what_was_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build", "--recipe", "causal-lm", "--count", "1", "--out", str(tmp_path / "z")]
    assert main([*argv, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device cuda: no usable CUDA device") and err.count("\n") == 1


def test_a_model_directory_is_a_base(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "org/tiny-llama"}))
    with pytest.raises(BaseModelError, match=r"no \*\.safetensors"):
        resolve_base(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    source = resolve_base(str(tmp_path))
    assert source.public_name == "org/tiny-llama" and source.gguf_file is None


def test_sampler_draws_three_kinds() -> None:
    recipe = make_recipe("causal-lm")
    draws = [recipe.sample(i) for i in range(400)]
    kinds = [d["kind"] for d in draws]
    assert 160 <= kinds.count("poisoned") <= 240 and 60 <= kinds.count("control") <= 140
    assert all(2 <= len(d["families"]) <= 5 and 0.005 <= d["lr"] <= 0.015 for d in draws)
