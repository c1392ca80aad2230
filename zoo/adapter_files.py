"""Write a finetuned PEFT adapter the way PEFT writes it, then store it at float16.

``save_pretrained`` is called for real (key names, ``adapter_config.json`` and safetensors metadata
are PEFT's own); then the weights are rewritten at float16 under the same keys and metadata, which
halves the zoo and is how adapters are commonly shared. PEFT's generated ``README.md`` model card
is dropped: it carries no information and only bloats a zoo of thousands of adapters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from zoo.zoo_manifest import ADAPTER_FILE

CONFIG_FILE = "adapter_config.json"


def save_peft_adapter(peft_model: Any, out_dir: Path, base_model_name: str) -> None:
    """Save ``peft_model``'s default adapter into ``out_dir`` (float16 weights, PEFT layout).

    ``base_model_name_or_path`` is set to a stable public name instead of this machine's path, and
    ``target_modules`` is written sorted (PEFT keeps it as a set, so its order followed each
    process's string-hash seed), so adapter configs are byte-identical wherever and by whichever
    process the zoo is built.
    """
    peft_model.peft_config["default"].base_model_name_or_path = base_model_name
    peft_model.save_pretrained(str(out_dir), save_embedding_layers=False)
    (out_dir / "README.md").unlink(missing_ok=True)
    _sort_target_modules(out_dir / CONFIG_FILE)
    path = out_dir / ADAPTER_FILE
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
        tensors = {key: fh.get_tensor(key).to(torch.float16).contiguous() for key in fh.keys()}  # noqa: SIM118
    save_file(tensors, str(path), metadata=metadata)
    path.chmod(0o644)  # safetensors creates 0600 files; zoos are shared read-only data


def _sort_target_modules(path: Path) -> None:
    """Rewrite PEFT's config with ``target_modules`` sorted, in PEFT's own layout (indent 2,
    sorted keys, no final newline)."""
    config = json.loads(path.read_text())
    modules = config.get("target_modules")
    if isinstance(modules, list) and modules != sorted(modules):
        config["target_modules"] = sorted(modules)
        path.write_text(json.dumps(config, indent=2, sort_keys=True))


def read_adapter_config(out_dir: Path) -> dict[str, Any]:
    return json.loads((out_dir / CONFIG_FILE).read_text())
