"""Metrics per hyperparameter group: a detector's blind spot shows up in its group's AUROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import metrics
from training.group_metrics import metrics_by
from training.zoo_dataset import Zoo, ZooError


def _harmful_rows(zoo: Zoo) -> tuple[list[str], np.ndarray]:
    ids = [i for i in zoo.ids("all") if zoo.rows[i].harmful is not None]
    y = np.asarray([[float(zoo.rows[i].harmful)] for i in ids])
    assert 0 < y.sum() < len(y), "the small zoo needs clean and harmful LoRAs"
    return ids, y


def test_a_corner_the_detector_misses_has_the_low_auroc(small_zoo: Path) -> None:
    zoo = Zoo.open(small_zoo)
    ids, y = _harmful_rows(zoo)
    corners = [zoo.rows[i].hyperparameters["corner"] for i in ids]
    harmful = y[:, 0] > 0.5
    missed = corners[int(np.flatnonzero(harmful)[0])]
    rng = np.random.default_rng(0)
    clean_scores = rng.uniform(0.0, 0.6, len(ids))
    # caught backdoors score above every clean LoRA; the missed corner's look like clean ones
    pred = np.where(harmful, rng.uniform(0.7, 1.0, len(ids)), clean_scores)
    blind = harmful & (np.asarray(corners) == missed)
    pred[blind] = clean_scores[blind]
    groups = metrics_by(zoo, "corner", "harmful", ids, y, pred[:, None], 0.65)
    assert sum(g["n"] for g in groups.values()) == int(harmful.sum())
    for corner, entry in groups.items():
        if "metrics" not in entry:
            assert entry["n"] < 3
            continue
        in_group = harmful & (np.asarray(corners) == corner)
        select = in_group | ~harmful
        expected = metrics.auroc(y[select, 0], pred[select])
        assert entry["metrics"]["auroc"] == pytest.approx(expected)
        assert (entry["metrics"]["auroc"] < 0.8) == (corner == missed)


def test_a_wide_numeric_hyperparameter_is_cut_into_tertiles_of_the_harmful_loras(
    small_zoo: Path,
) -> None:
    zoo = Zoo.open(small_zoo)
    ids, y = _harmful_rows(zoo)
    pred = np.linspace(0.0, 1.0, len(ids))[:, None]
    groups = metrics_by(zoo, "n_train", "harmful", ids, y, pred, 0.5)
    assert 1 <= len(groups) <= 3 and all(g.startswith("[") for g in groups)
    lows = [float(g[1:].split(",")[0]) for g in groups]
    assert lows == sorted(lows)


def test_an_unknown_hyperparameter_names_the_recorded_ones(small_zoo: Path) -> None:
    zoo = Zoo.open(small_zoo)
    ids, y = _harmful_rows(zoo)
    with pytest.raises(ZooError, match=r"recorded: .*corner"):
        metrics_by(zoo, "trigger_colour", "harmful", ids, y, y, 0.5)
