"""Where an adapter's files are: a ``.safetensors`` file, or a PEFT adapter directory.

Why: PEFT's ``save_pretrained`` writes a directory (``adapter_model.safetensors`` beside
``adapter_config.json``), and that directory is what people have at hand; asking them to name the
two files, and losing ``lora_alpha`` when they forget the config, helps nobody.
"""

from __future__ import annotations

from pathlib import Path

from lora_io.errors import LoraFileError

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"


def resolve_adapter_paths(
    path: str | Path, config: str | Path | None = None
) -> tuple[Path, Path | None]:
    """``(weights file, config file or None)`` for a file or a PEFT adapter directory.

    A directory gives its ``adapter_model.safetensors`` (or its only ``.safetensors`` file) and,
    unless ``config`` is given, its ``adapter_config.json`` when present.

    Raises:
        LoraFileError: a path does not exist, or a directory holds no single adapter file.
    """
    weights = Path(path)
    if weights.is_dir():
        found = sorted(weights.glob("*.safetensors"))
        if (weights / PEFT_WEIGHTS).is_file():
            found = [weights / PEFT_WEIGHTS]
        if not found:
            raise LoraFileError(
                f"{weights} is a directory without a .safetensors file; give the adapter file or a "
                f"PEFT adapter directory (with {PEFT_WEIGHTS})"
            )
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:5])
            raise LoraFileError(
                f"{weights} holds {len(found)} .safetensors files ({names}); name the adapter file"
            )
        weights = found[0]
        if config is None and (weights.parent / PEFT_CONFIG).is_file():
            config = weights.parent / PEFT_CONFIG
    elif not weights.is_file():
        raise LoraFileError(f"{weights}: no such file or directory")
    if config is not None and not Path(config).is_file():
        raise LoraFileError(f"{config}: no such file")
    return weights, Path(config) if config is not None else None
