"""Checkpoint files: ``model.safetensors`` + ``config.json`` + ``meta.json``, never pickle.

    <directory>/model.safetensors   every tensor of the state dict (parameters and buffers)
    <directory>/config.json         what is needed to rebuild the model and read its outputs
    <directory>/meta.json           provenance: metrics, zoo hash, git sha, package versions

Tensors go through ``safetensors.torch`` (no ``torch.save``/``torch.load``), so a loaded checkpoint
reproduces outputs bit for bit. Files are written under temporary names and renamed, ``config.json``
last, so a reader never sees a half-written checkpoint as complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.lora_batch import SpecMismatchError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
CHECKPOINT_FORMAT = "loravet.checkpoint/1"
"""Written into config.json and the safetensors metadata; bumped on an incompatible change."""


class CheckpointError(ValueError):
    """A checkpoint directory is missing files, unreadable, or inconsistent (the message names it)."""


class CheckpointSpecError(SpecMismatchError):
    """A checkpoint used on adapters of another ``LoraSpec`` (the message names both fingerprints)."""


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | Path,
    tensors: Mapping[str, torch.Tensor],
    config: dict[str, Any],
    meta: dict[str, Any],
) -> Path:
    """Write the three files into ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    config_text = json.dumps(
        {**config, "format": CHECKPOINT_FORMAT}, indent=2, sort_keys=True, allow_nan=False
    )
    meta_text = json.dumps(meta, indent=2, sort_keys=True)
    _write_atomic(
        directory / WEIGHTS_FILE,
        lambda p: save_file(state, str(p), metadata={"format": "pt", "loravet": CHECKPOINT_FORMAT}),
    )
    _write_atomic(directory / META_FILE, lambda p: p.write_text(meta_text + "\n"))
    _write_atomic(directory / CONFIG_FILE, lambda p: p.write_text(config_text + "\n"))
    return directory


def load_checkpoint(
    directory: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Read ``(tensors, config, meta)`` from a checkpoint directory.

    Raises:
        CheckpointError: a file is missing or unreadable, or config.json is of another format.
    """
    directory = Path(directory)
    missing = [f for f in (WEIGHTS_FILE, CONFIG_FILE, META_FILE) if not (directory / f).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {str(directory)!r} lacks {', '.join(missing)}")
    docs = []
    for name in (CONFIG_FILE, META_FILE):
        try:
            doc = json.loads((directory / name).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(
                f"checkpoint {str(directory)!r}: {name} is unreadable: {exc}"
            ) from exc
        if not isinstance(doc, dict):
            raise CheckpointError(f"checkpoint {str(directory)!r}: {name} is not a JSON object")
        docs.append(doc)
    config, meta = docs
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(directory)!r}: config.json format is {config.get('format')!r}, "
            f"this loravet reads {CHECKPOINT_FORMAT!r}"
        )
    try:
        tensors = load_file(str(directory / WEIGHTS_FILE), device="cpu")
    except Exception as exc:  # safetensors raises its own error types on malformed files
        raise CheckpointError(
            f"checkpoint {str(directory)!r}: {WEIGHTS_FILE} is unreadable: {exc}"
        ) from exc
    return tensors, config, meta
