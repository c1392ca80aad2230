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
    try:
        spec = json.loads(Path(spec_file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SettingsError(f"cannot read settings spec {spec_file}: {exc}") from None
    models = spec.get("models", {}) if isinstance(spec, dict) else {}
    if model not in models:
        raise SettingsError(
            f"settings spec {spec_file} has no model {model!r}; it has: {', '.join(models) or 'none'}"
        )
    settings = cell_settings(models[model], zoo_name, task)
    train = {**spec.get("train", {}), **settings.get("train", {})}
    return dict(settings.get("hparams", {})), {k: v for k, v in train.items() if k in TRAIN_FIELDS}
