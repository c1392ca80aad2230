"""``loravet via-task``: a quality predictor that reads quality through the finetune's task (E5).

    loravet train --zoo zoos/minilm-topics --task membership --model gl_net ... --out runs/member
    loravet via-task runs/member --zoo zoos/minilm-topics --out predictors/minilm-topics-quality-gl_net

The membership predictor is kept whole; a ridge map from its label probabilities (and their
pairwise products) to quality is fitted on the zoo's train split (true labels) and chosen on the
validation split (the membership model's probabilities), never on test
(:mod:`models.quality_via_task`). Run ``loravet calibrate`` on the result for its interval.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from core.cli_support import Parser, fail
from models.checkpoint import CheckpointError
from models.predictor import Predictor, load_predictor, save_predictor
from models.quality_via_task import QualityViaTask, QualityViaTaskConfig, fit_task_map
from training.zoo_dataset import Zoo, ZooError, load_task, quality_label


def compose(member: Predictor, zoo: Zoo, predictor_id: str) -> tuple[Predictor, dict[str, float]]:
    """The quality predictor built on ``member`` and its fit on ``zoo`` (train, then val)."""
    c = member.config
    if c.task != "membership":
        raise ValueError(
            f"{c.predictor_id} is a {c.task} predictor; via-task needs a membership one"
        )
    data = {split: load_task(zoo, split, "membership", spec=c.spec) for split in ("train", "val")}
    quality = {
        split: np.array([quality_label(zoo.rows[i]) for i in d.ids]) for split, d in data.items()
    }
    val_probs = np.asarray(member.predict(data["val"].batch), dtype=np.float64)
    pairs, alpha, w, b, val_r2 = fit_task_map(
        data["train"].y, quality["train"], val_probs, quality["val"]
    )
    config = QualityViaTaskConfig(
        inner=c.model_name, inner_hparams=dict(c.hparams), n_labels=c.out_features, pairs=pairs
    )
    model = QualityViaTask(c.spec, 1, config)
    model.inner.load_state_dict(member.model.state_dict())
    model.set_task_map(w, b)
    dtype = next(member.model.parameters()).dtype
    new_config = dataclasses.replace(
        c,
        predictor_id=predictor_id,
        task="quality",
        model_name="quality_via_task",
        hparams=dataclasses.asdict(config),
        out_features=1,
        target_mean=[],
        target_std=[],
        threshold=None,
        label_names=["quality"],
        calibration=None,
    )
    fit = {"ridge_alpha": alpha, "pairs": float(pairs), "val_r2": val_r2}
    meta = {**member.meta, "via_task": {"membership_predictor": c.predictor_id, **fit}}
    return Predictor(new_config, model.to(dtype).eval(), meta), fit


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="loravet via-task", description=__doc__.split("\n")[0])
    p.add_argument("membership", type=Path, help="a trained membership predictor directory")
    p.add_argument("--zoo", type=Path, required=True, help="the zoo it was trained on")
    p.add_argument("--out", type=Path, required=True, help="quality predictor directory to write")
    p.add_argument("--predictor-id", help="default: the output directory's name")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        member = load_predictor(args.membership)
        predictor, fit = compose(member, Zoo.open(args.zoo), args.predictor_id or args.out.name)
        save_predictor(predictor, args.out)
    except (CheckpointError, ZooError, ValueError, OSError) as exc:
        return fail(str(exc))
    features = "labels and pairs" if fit["pairs"] else "labels"
    print(
        f"{args.out}: quality through {member.config.predictor_id}'s {member.config.out_features} "
        f"labels ({features}, ridge alpha {fit['ridge_alpha']:g}); validation R^2 {fit['val_r2']:.3f}"
    )
    return 0
