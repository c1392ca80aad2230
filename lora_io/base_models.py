"""Recognise the base-model family from module names and shapes, never from user-editable metadata.

Families: ``sd1`` (Stable Diffusion 1.x), ``sd2``, ``sdxl``, ``llama`` (Llama / Qwen / Mistral-style
decoders: ``model.layers.N.self_attn.q_proj``), ``bert`` (BERT-style encoders:
``encoder.layer.N.attention.self.query``), otherwise ``unknown``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from lora_io.lora_spec import LoraSpec

Family = Literal["sd1", "sd2", "sdxl", "llama", "bert", "unknown"]

FAMILY_TITLES: dict[str, str] = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sdxl": "Stable Diffusion XL",
    "llama": "Llama/Qwen/Mistral-style decoder",
    "bert": "BERT-style encoder",
    "unknown": "unknown base model",
}

# (hidden size, k_proj out) -> a well-known decoder with those shapes (a hint, not a promise).
_KNOWN_DECODERS = {
    (4096, 4096): "Llama-2-7B-like", (4096, 1024): "Llama-3-8B / Mistral-7B-like",
    (3072, 1024): "Llama-3.2-3B-like", (2048, 512): "Llama-3.2-1B-like",
    (1536, 256): "Qwen2-1.5B-like", (896, 128): "Qwen2-0.5B-like", (3584, 512): "Qwen2-7B-like",
    (576, 192): "SmolLM2-135M (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)",
}  # fmt: skip
# hidden size -> decoder, for adapters that touch no k/v projection (so the kv width is unknown)
_KNOWN_DECODER_WIDTHS = {576: "SmolLM2-135M (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)"}

# Spec fingerprints of bases that belong to no public family but that loravet itself ships zoos for.
_KNOWN_SPECS = {
    "a06276cafef3a1f1": "loravet/digits-mlp-64-128-128-10 (the digits zoo's base classifier)",
}

_DECODER_RE = re.compile(
    r"(?:^|\.)layers\.(\d+)\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)$"
)
_BERT_RE = re.compile(
    r"(?:^|\.)encoder\.layer\.(\d+)\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)$"
)


@dataclass(frozen=True)
class BaseModel:
    """What the adapter was trained on, as far as names and shapes tell."""

    family: Family
    title: str
    hint: str | None = None
    details: dict[str, int] = field(default_factory=dict)


def recognise_base_model(spec: LoraSpec) -> BaseModel:
    names = spec.names
    by_name = {m.name: m for m in spec.modules}
    if any(n.startswith(("unet.", "text_encoder")) for n in names):
        return _stable_diffusion(spec)
    dec = [(_DECODER_RE.search(n), n) for n in names]
    if dec and all(m for m, _ in dec):
        layers = {int(m.group(1)) for m, _ in dec if m}
        hidden = next((by_name[n].in_features for m, n in dec if m and m.group(3) == "q"), None)
        kv = next((by_name[n].out_features for m, n in dec if m and m.group(3) in {"k", "v"}), None)
        details = {"adapted_layers": len(layers), "max_layer_index": max(layers)}
        if hidden:
            details["hidden_size"] = hidden
        hint = _KNOWN_DECODERS.get((hidden or 0, kv or 0))
        if hint is None and kv is None:
            hint = _KNOWN_DECODER_WIDTHS.get(hidden or 0)
        return BaseModel("llama", FAMILY_TITLES["llama"], hint, details)
    bert = [(_BERT_RE.search(n), n) for n in names]
    if bert and all(m for m, _ in bert):
        layers = {int(m.group(1)) for m, _ in bert if m}
        hidden = next((by_name[n].in_features for m, n in bert if m and m.group(3)), None)
        details = {"adapted_layers": len(layers), "max_layer_index": max(layers)}
        hint = None
        if hidden:
            details["hidden_size"] = hidden
            if hidden == 384 and max(layers) <= 5:
                hint = "MiniLM-L6-H384 (e.g. sentence-transformers/all-MiniLM-L6-v2)"
            elif hidden == 768 and max(layers) <= 11:
                hint = "BERT-base-like"
        return BaseModel("bert", FAMILY_TITLES["bert"], hint, details)
    return BaseModel("unknown", FAMILY_TITLES["unknown"], _KNOWN_SPECS.get(spec.fingerprint))


def _stable_diffusion(spec: LoraSpec) -> BaseModel:
    names = spec.names
    context = {m.in_features for m in spec.modules if re.search(r"attn2\.to_[kv]$", m.name)}
    te_hidden = {
        m.in_features
        for m in spec.modules
        if re.search(r"^text_encoder\..*self_attn\.q_proj$", m.name)
    }
    details = {"modules": len(names)}
    if any(n.startswith("text_encoder_2.") for n in names) or 2048 in context:
        family: Family = "sdxl"
    elif 1024 in context or 1024 in te_hidden:
        family = "sd2"
    elif 768 in context or 768 in te_hidden:
        family = "sd1"
    elif any(".down_blocks.0.attentions." in n for n in names):
        family = "sd1"  # SDXL has no attention in down_blocks.0
    elif any(n.startswith("unet.") for n in names):
        # SDXL stacks up to 10 transformer blocks per attention; SD 1.x/2.x have one
        family = (
            "sdxl" if any(re.search(r"transformer_blocks\.[1-9]", n) for n in names) else "unknown"
        )
    else:
        family = "unknown"
    return BaseModel(family, FAMILY_TITLES[family], None, details)
