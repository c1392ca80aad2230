"""A model's settings for one zoo and task, read from a benchmark experiment spec.

The E1 spec (``benchmarks/experiments/e1_models_tasks.json``) is where GL-net's tuned settings are
recorded with the measurements that chose them. ``loravet bench`` and ``loravet train --settings``
(which trains the shipped predictors) both read them from here, so the benchmarked and the shipped
predictor cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Fields of a spec's ``train`` section that ``loravet train`` takes as flags.
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "patience")


class SettingsError(ValueError):
    """The spec file is unreadable or does not describe the requested model."""


def load_spec(spec_file: str | Path) -> dict[str, Any]:
    """Read an experiment spec. A spec may name another spec in ``models_from`` instead of writing
    its own ``models`` (and ``tuning_note``): E2 trains E1's models, so GL-net's tuned settings are
    written once. The reference is resolved here and dropped, so a cell's settings (and the key its
    result is stored under) are the same as if the entries had been copied in."""
    path = Path(spec_file)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read settings spec {spec_file}: {exc}") from None
    if not isinstance(spec, dict):
        raise SettingsError(f"settings spec {spec_file} is not a JSON object")
    source = spec.pop("models_from", None)
    if source is not None:
        if "models" in spec:
            raise SettingsError(f"settings spec {spec_file} has both models and models_from")
        base = load_spec(path.parent / source)
        spec["models"] = base.get("models", {})
        if "tuning_note" in base:
            spec["tuning_note"] = base["tuning_note"]
    return spec


def cell_settings(model_spec: dict[str, Any], zoo_name: str, task: str) -> dict[str, Any]:
    """One model's settings for one zoo and task: its ``hparams`` / ``train``, then the spec's
    ``overrides`` for ``"<task>"`` and for ``"<zoo>/<task>"`` on top (each tuned on that zoo's val
    split). Without overrides the settings are the model's entry itself, so its key is unchanged."""
    settings = {k: v for k, v in model_spec.items() if k != "overrides"}
    for key in (task, f"{zoo_name}/{task}"):
        override = model_spec.get("overrides", {}).get(key, {})
        for part in ("hparams", "train"):
            if part in override:
                settings[part] = {**settings.get(part, {}), **override[part]}
    return settings


def train_settings(
    spec_file: str | Path, zoo_name: str, task: str, model: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hparams, train)`` for ``model`` on ``zoo_name``/``task``: the spec's shared ``train``
    section under the model's own, overrides applied. ``train`` holds only ``TRAIN_FIELDS``."""
    spec = load_spec(spec_file)
    models = spec.get("models", {})
    if model not in models:
        raise SettingsError(
            f"settings spec {spec_file} has no model {model!r}; it has: {', '.join(models) or 'none'}"
        )
    settings = cell_settings(models[model], zoo_name, task)
    train = {**spec.get("train", {}), **settings.get("train", {})}
    return dict(settings.get("hparams", {})), {k: v for k, v in train.items() if k in TRAIN_FIELDS}
