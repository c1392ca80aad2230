"""kohya and diffusers files written to the published key conventions, with real SD 1.5 / SDXL shapes."""

from __future__ import annotations

import random

import numpy as np
import pytest

import lora_io
from harness.lora_files import (
    clip_text_modules,
    diffusers_legacy_lora,
    diffusers_peft_lora,
    kohya_lora,
    safetensors_bytes,
    sd15_unet_modules,
    sdxl_unet_modules,
)
from lora_io.key_grammar import kohya_to_dotted, parse_keys


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_kohya_sd15_full_lora(rng: np.random.Generator) -> None:
    unet, te = sd15_unet_modules(), clip_text_modules(12, 768)
    # plus LoCon-style 3x3 resnet convs (kohya conv_dim)
    convs = [
        ("down_blocks.0.resnets.0.conv1", 320, 320, "conv3x3"),
        ("up_blocks.3.resnets.2.conv2", 320, 320, "conv3x3"),
    ]
    tensors = kohya_lora(unet + convs, "lora_unet", rank=8, alpha=4.0, rng=rng)
    tensors |= kohya_lora(te, "lora_te", rank=8, alpha=4.0, rng=rng)
    adapter = lora_io.load_adapter(
        safetensors_bytes(tensors, {"ss_network_module": "networks.lora"})
    )
    assert adapter.format == "kohya"
    assert len(adapter.modules) == 192 + 72 + 2
    assert set(adapter.ranks) == {8}
    assert all(m.scale == pytest.approx(0.5) for m in adapter.modules)
    assert adapter.scale_source == "alpha_keys"
    assert adapter.base_model.family == "sd1"
    names = set(adapter.spec.names)
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q" in names
    assert "unet.up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj" in names
    assert "text_encoder.text_model.encoder.layers.11.self_attn.out_proj" in names
    conv = adapter.module("unet.down_blocks.0.resnets.0.conv1")
    assert (conv.kind, conv.kernel, conv.in_features, conv.out_features) == (
        "conv",
        (3, 3),
        320 * 9,
        320,
    )
    k2 = adapter.module("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k")
    assert (k2.out_features, k2.in_features) == (1280, 768)
    # the delta equals kohya's merge: up @ down * alpha / r
    key = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    want = (
        tensors[f"{key}.lora_up.weight"].astype(np.float64)
        @ tensors[f"{key}.lora_down.weight"].astype(np.float64)
        * 0.5
    )
    np.testing.assert_allclose(k2.delta(), want, rtol=1e-3, atol=1e-6)


def test_kohya_without_alpha_means_scale_one(rng: np.random.Generator) -> None:
    tensors = kohya_lora(sd15_unet_modules()[:6], "lora_unet", rank=4, alpha=None, rng=rng)
    adapter = lora_io.load_adapter(safetensors_bytes(tensors))
    assert adapter.scale_source == "kohya_default"
    assert all(m.scale == 1.0 for m in adapter.modules)


def test_kohya_alpha_zero_means_alpha_equals_rank(rng: np.random.Generator) -> None:
    tensors = kohya_lora(sd15_unet_modules()[:3], "lora_unet", rank=4, alpha=0.0, rng=rng)
    assert all(m.scale == 1.0 for m in lora_io.load_adapter(safetensors_bytes(tensors)).modules)


def test_kohya_sdxl_sai_names(rng: np.random.Generator) -> None:
    te1, te2 = clip_text_modules(2, 768), clip_text_modules(2, 1280)
    tensors = kohya_lora(sdxl_unet_modules(), "lora_unet", rank=16, alpha=8.0, rng=rng)
    tensors |= kohya_lora(te1, "lora_te1", rank=16, alpha=8.0, rng=rng) | kohya_lora(
        te2, "lora_te2", rank=16, alpha=8.0, rng=rng
    )
    adapter = lora_io.load_adapter(safetensors_bytes(tensors))
    assert adapter.base_model.family == "sdxl"
    assert len(adapter.modules) == len(sdxl_unet_modules()) + 24
    k = adapter.module("unet.input_blocks.4.1.transformer_blocks.0.attn2.to_k")
    assert (k.out_features, k.in_features, k.rank) == (640, 2048, 16)
    assert adapter.module("text_encoder_2.text_model.encoder.layers.1.mlp.fc1").out_features == 5120


def test_kohya_unet_only_sdxl_recognised_by_context_width(rng: np.random.Generator) -> None:
    tensors = kohya_lora(sdxl_unet_modules(max_blocks=1), "lora_unet", rank=4, alpha=4.0, rng=rng)
    assert lora_io.load_adapter(safetensors_bytes(tensors)).base_model.family == "sdxl"


def test_diffusers_peft_keys_match_kohya_names(rng: np.random.Generator) -> None:
    unet = sd15_unet_modules()[:12]
    te = clip_text_modules(1, 768)
    d = diffusers_peft_lora(
        [m for m in unet if m[3] == "linear"], "unet", 4, rng
    ) | diffusers_peft_lora(te, "text_encoder", 4, rng)
    k = kohya_lora([m for m in unet if m[3] == "linear"], "lora_unet", 4, 4.0, rng) | kohya_lora(
        te, "lora_te", 4, 4.0, rng
    )
    a_d, a_k = (
        lora_io.load_adapter(safetensors_bytes(d)),
        lora_io.load_adapter(safetensors_bytes(k)),
    )
    assert a_d.format == "diffusers" and a_k.format == "kohya"
    assert a_d.spec == a_k.spec  # same base model, same spec whatever tool wrote the file
    assert a_d.spec.fingerprint == a_k.spec.fingerprint
    assert a_d.base_model.family == "sd1"
    assert a_d.scale_source == "assumed"
    checks = {c.name: c.status for c in lora_io.run_checks(a_d)}
    assert checks["scale_known"] == "warn"


def test_diffusers_legacy_processor_keys(rng: np.random.Generator) -> None:
    modules = sd15_unet_modules()
    tensors = diffusers_legacy_lora(modules, 4, rng)
    adapter = lora_io.load_adapter(safetensors_bytes(tensors))
    assert adapter.format == "diffusers_legacy"
    assert len(adapter.modules) == 16 * 8
    assert (
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0" in adapter.spec.names
    )
    assert (
        adapter.module(
            "unet.down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"
        ).in_features
        == 768
    )
    assert adapter.base_model.family == "sd1"


def test_diffusers_network_alphas(rng: np.random.Generator) -> None:
    unet = [m for m in sd15_unet_modules()[:6] if m[3] == "linear"]
    tensors = diffusers_peft_lora(unet, "unet", 4, rng)
    tensors |= {f"unet.{path}.alpha": np.asarray(2.0, "float32") for path, *_ in unet}
    adapter = lora_io.load_adapter(safetensors_bytes(tensors))
    assert adapter.scale_source == "alpha_keys"
    assert all(m.scale == 0.5 for m in adapter.modules)


def test_diffusers_embedded_config_metadata(rng: np.random.Generator) -> None:
    unet = [m for m in sd15_unet_modules()[:6] if m[3] == "linear"]
    meta = {"lora_adapter_metadata": '{"r": 4, "lora_alpha": 8, "use_rslora": false}'}
    adapter = lora_io.load_adapter(
        safetensors_bytes(diffusers_peft_lora(unet, "unet", 4, rng), meta)
    )
    assert adapter.scale_source == "metadata_config"
    assert all(m.scale == 2.0 for m in adapter.modules)


def test_pairing_is_by_grammar_not_key_order(rng: np.random.Generator) -> None:
    tensors = kohya_lora(sd15_unet_modules()[:20], "lora_unet", 4, 2.0, rng)
    keys = list(tensors)
    random.Random(3).shuffle(keys)
    shuffled = {k: tensors[k] for k in keys}
    a, b = (
        lora_io.load_adapter(safetensors_bytes(tensors)),
        lora_io.load_adapter(safetensors_bytes(shuffled)),
    )
    assert a.spec == b.spec
    for ma, mb in zip(a.modules, b.modules, strict=True):
        np.testing.assert_array_equal(ma.delta(), mb.delta())


def test_bf16_factors_are_read_exactly() -> None:
    a = np.array([[1.0, -2.5, 0.15625], [3.0, 0.5, -1.0]], dtype=np.float32)
    b = np.array([[1.0, 2.0], [0.25, -4.0], [8.0, 1.5]], dtype=np.float32)
    to_bf16 = lambda x: (x.view(np.uint32) >> 16).astype(np.uint16)  # noqa: E731 - exact for these values
    adapter = lora_io.load_adapter(
        safetensors_bytes({"m.lora_A.weight": to_bf16(a), "m.lora_B.weight": to_bf16(b)})
    )
    assert adapter.dtypes == ("BF16",)
    np.testing.assert_array_equal(
        adapter.modules[0].delta(), b.astype(np.float64) @ a.astype(np.float64)
    )


def test_kohya_name_normalisation() -> None:
    assert kohya_to_dotted(
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj"
    ) == ("unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj")
    assert (
        kohya_to_dotted("lora_unet_up_blocks_0_resnets_1_time_emb_proj")
        == "unet.up_blocks.0.resnets.1.time_emb_proj"
    )
    assert kohya_to_dotted("lora_te2_text_model_encoder_layers_31_self_attn_q_proj") == (
        "text_encoder_2.text_model.encoder.layers.31.self_attn.q_proj"
    )


def test_peft_adapter_name_is_stripped() -> None:
    layout = parse_keys(["base_model.model.model.layers.0.self_attn.q_proj.lora_A.custom.weight",
                         "base_model.model.model.layers.0.self_attn.q_proj.lora_B.custom.weight"])  # fmt: skip
    assert layout.adapter_name == "custom"
    assert layout.modules[0].name == "model.layers.0.self_attn.q_proj"
