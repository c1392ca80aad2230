"""LLM adapters of SmolLM2-135M-Instruct (the causal-lm zoo's base), written by PEFT on the real
packaged model: recognised by name, and an adapter whose module set no shipped predictor was
trained on gets ``review`` that says why, never a silent prediction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loravet import SHIPPED_PREDICTORS
from workers.vet_cli import main as vet_main

pytest.importorskip("peft")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smollm2_peft_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA on q/k/v/o of all 30 layers (the zoo adapts q/v of the top 10), B non-zero."""
    from peft import LoraConfig, get_peft_model

    from zoo.adapter_files import save_peft_adapter
    from zoo.causal_lm_base import load_causal_lm, resolve_base

    source = resolve_base("smollm2-135m-instruct")
    _, model, _ = load_causal_lm(source)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        init_lora_weights=False,  # random B: an adapter that changes the weights
    )
    out = tmp_path_factory.mktemp("smollm2-all-layers")
    save_peft_adapter(get_peft_model(model, config), out, source.public_name)
    return out


def test_an_unknown_module_set_of_a_known_llm_gets_review_that_says_why(
    smollm2_peft_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert vet_main([str(smollm2_peft_dir), "--json", "--predictors", str(SHIPPED_PREDICTORS)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "peft" and len(report["modules"]) == 30 * 4
    base = report["base_model"]  # named from shapes and names, not from editable metadata
    assert base["family"] == "llama" and "decoder" in base["title"]
    assert base["hint"].startswith("SmolLM2-135M")
    assert report["verdict"] == "review" and report["predictions"] == []
    (reason,) = [r for r in report["reasons"] if r["code"] == "no_predictor"]
    shipped_for_this_base = sorted(
        p.name for p in SHIPPED_PREDICTORS.iterdir() if p.name.startswith("causal-lm-")
    )
    assert shipped_for_this_base == ["causal-lm-harmful-gl_net", "causal-lm-quality-gl_net"]
    for predictor_id in shipped_for_this_base:  # a predictor of the same base is named, with why
        assert predictor_id in reason["message"] and "module set" in reason["message"]
    assert "person should review" in reason["message"]
