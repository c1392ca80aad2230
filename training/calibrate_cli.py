"""``loravet calibrate``: fit a predictor's read-out on its zoo's validation split (never test).

    loravet calibrate predictors/minilm-topics-harmful-gl_net --zoo zoos/minilm-topics
    loravet calibrate predictors/minilm-topics-quality-gl_net --zoo zoos/minilm-topics

Harmful predictors get Platt scaling and a reject threshold / review band chosen for a target false
positive rate and miss rate; quality predictors get a split-conformal interval and a flag saying
whether they are good enough to decide anything (:mod:`models.calibration`). Only ``config.json``
(and a record in ``meta.json``) change: the weights are untouched, so calibrating again with other
targets is cheap. Bad input ends in one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.cli_support import Parser, fail
from models.calibration import (
    DEFAULT_COVERAGE,
    DEFAULT_MAX_FPR,
    DEFAULT_MAX_MISS,
    Calibration,
    fit_calibration,
    logit,
)
from models.checkpoint import CONFIG_FILE, META_FILE, CheckpointError
from models.predictor import Predictor, load_predictor
from training.zoo_dataset import Zoo, ZooError, load_task


def raw_outputs(predictor: Predictor, zoo: Zoo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uncalibrated outputs, targets) on a split: logits for harmful, values for quality."""
    task = predictor.config.task
    bare = Predictor(
        dataclasses.replace(predictor.config, calibration=None), predictor.model, predictor.meta
    )
    data = load_task(zoo, split, task, spec=predictor.config.spec)
    out = np.asarray(bare.predict(data.batch), dtype=np.float64).reshape(-1)
    targets = np.asarray(data.y, dtype=np.float64).reshape(-1)
    return (logit(out) if task == "harmful" else out), targets


def calibrate(
    directory: Path,
    zoo_dir: Path,
    *,
    max_fpr: float = DEFAULT_MAX_FPR,
    max_miss: float = DEFAULT_MAX_MISS,
    coverage: float = DEFAULT_COVERAGE,
) -> Calibration:
    """Fit on the zoo's validation split and rewrite the predictor's ``config.json``."""
    torch.set_num_threads(1)
    predictor = load_predictor(directory)
    task = predictor.config.task
    if task not in ("harmful", "quality"):
        raise ValueError(
            f"{directory}: a {task} predictor has nothing to calibrate (harmful, quality)"
        )
    zoo = Zoo.open(zoo_dir)
    raw, targets = raw_outputs(predictor, zoo, "val")
    cal = fit_calibration(task, raw, targets, max_fpr=max_fpr, max_miss=max_miss, coverage=coverage)
    threshold: float | None
    if task == "harmful":
        threshold = cal.reject_threshold
    else:  # a quality threshold decides only when the predictor is good enough to
        threshold = predictor.config.threshold if cal.decides else None
    config = dataclasses.replace(predictor.config, calibration=cal, threshold=threshold)
    _rewrite(directory, config.to_json(), {"calibration": _record(cal, zoo_dir, max_fpr, max_miss)})
    return cal


def _record(cal: Calibration, zoo_dir: Path, max_fpr: float, max_miss: float) -> dict[str, Any]:
    from core.provenance import provenance
    from zoo.zoo_manifest import zoo_digests

    return {
        "fitted_on": f"{zoo_dir} val split ({cal.n_val} LoRAs)",
        "targets": {"max_fpr": max_fpr, "max_miss": max_miss},
        "description": cal.describe(),
        "provenance": provenance(zoo_digests(zoo_dir)),
    }


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` under a temporary name and rename it, so a reader never sees half a file."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


def update_meta(directory: Path, meta_update: dict[str, Any]) -> None:
    """Extend a checkpoint's ``meta.json`` with ``meta_update`` (its weights and config untouched)."""
    meta = json.loads((directory / META_FILE).read_text())
    meta.update(meta_update)
    _write_json(directory / META_FILE, meta)


def _rewrite(directory: Path, config: dict[str, Any], meta_update: dict[str, Any]) -> None:
    """Replace ``config.json`` (same layout as ``save_checkpoint``) and extend ``meta.json``."""
    from models.checkpoint import CHECKPOINT_FORMAT

    update_meta(directory, meta_update)
    _write_json(directory / CONFIG_FILE, {**config, "format": CHECKPOINT_FORMAT})


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="loravet calibrate", description=__doc__.split("\n")[0])
    p.add_argument("predictor", type=Path, help="predictor directory (written by `loravet train`)")
    p.add_argument("--zoo", type=Path, required=True, help="the zoo it was trained on")
    p.add_argument("--max-fpr", type=float, default=DEFAULT_MAX_FPR,
                   help="harmful: share of clean validation LoRAs the reject threshold may flag")  # fmt: skip
    p.add_argument("--max-miss", type=float, default=DEFAULT_MAX_MISS,
                   help="harmful: share of harmful validation LoRAs the review band may let through")  # fmt: skip
    p.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE,
                   help="quality: coverage of the conformal interval")  # fmt: skip
    args = p.parse_args(argv)
    for name in ("max_fpr", "max_miss", "coverage"):
        if not 0 < getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be in (0, 1) (got {getattr(args, name)})")
    try:
        cal = calibrate(
            args.predictor, args.zoo, max_fpr=args.max_fpr, max_miss=args.max_miss,
            coverage=args.coverage,
        )  # fmt: skip
    except (ZooError, CheckpointError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(f"{args.predictor}: {cal.describe()}")
    return 0
