"""``loravet via-task``: a quality predictor that reads quality through the finetune's task (E5).

    loravet train --zoo zoos/minilm-topics --task membership --model gl_net ... --out runs/member
    loravet via-task runs/member --zoo zoos/minilm-topics --out predictors/minilm-topics-quality-gl_net

Given a via-task predictor instead of a membership one, it keeps that predictor's membership model
and fits the map again (how the shipped predictors moved to the current map choices).

The membership predictor is kept whole; a map from its label probabilities (with their pairwise
products, or with each module's log delta norm) to quality, ridge or boosted trees, is fitted on
the zoo's train split (true labels) and chosen on the validation split (the membership model's
probabilities), never on test (:mod:`training.quality_maps`). Run ``loravet calibrate`` on the
result for its interval.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from core.cli_support import Parser, fail
from lora_io import load_adapter
from models.checkpoint import CheckpointError
from models.predictor import Predictor, load_predictor, save_predictor
from models.quality_via_task import QualityViaTask, QualityViaTaskConfig, log_delta_norms
from training.quality_maps import MapData, choose_quality_map
from training.zoo_dataset import Zoo, ZooError, adapter_paths, load_task, quality_label


def membership_model_of(predictor: Predictor) -> Predictor:
    """The membership predictor inside a via-task one (same weights), or ``predictor`` itself."""
    c = predictor.config
    if c.model_name != "quality_via_task":
        return predictor
    model = cast(QualityViaTask, predictor.model)
    config = dataclasses.replace(
        c,
        predictor_id=str(
            predictor.meta.get("via_task", {}).get("membership_predictor", c.predictor_id)
        ),
        task="membership",
        model_name=model.config.inner,
        hparams=dict(model.config.inner_hparams),
        out_features=model.config.n_labels,
        label_names=[f"label_{i}" for i in range(model.config.n_labels)],
        calibration=None,
    )
    meta = {k: v for k, v in predictor.meta.items() if k not in ("via_task", "calibration")}
    return Predictor(config, model.inner, meta)


def compose(member: Predictor, zoo: Zoo, predictor_id: str) -> tuple[Predictor, dict[str, Any]]:
    """The quality predictor built on ``member`` and its fit on ``zoo`` (train, then val)."""
    member = membership_model_of(member)
    c = member.config
    if c.task != "membership":
        raise ValueError(
            f"{c.predictor_id} is a {c.task} predictor; via-task needs a membership one"
        )
    first = zoo.rows[zoo.ids("train")[0]]
    zoo_spec = load_adapter(*adapter_paths(zoo, first)).spec
    if zoo_spec != c.spec:
        raise ValueError(
            f"{c.predictor_id} reads adapters of {c.base_model} ({len(c.spec)} modules, spec "
            f"{c.spec.fingerprint}); the zoo {zoo.root} holds another kind ({len(zoo_spec)} modules, "
            f"spec {zoo_spec.fingerprint}): give the zoo it was trained on"
        )
    data = {split: load_task(zoo, split, "membership", spec=c.spec) for split in ("train", "val")}
    maps = {
        split: MapData(
            labels=d.y if split == "train" else np.asarray(member.predict(d.batch), np.float64),
            log_norms=log_delta_norms(d.batch).double().numpy(),
            quality=np.array([quality_label(zoo.rows[i]) for i in d.ids]),
        )
        for split, d in data.items()
    }
    chosen = choose_quality_map(maps["train"], maps["val"])
    trees = chosen.trees.config if chosen.trees is not None else None
    config = QualityViaTaskConfig(
        inner=c.model_name,
        inner_hparams=dict(c.hparams),
        n_labels=c.out_features,
        pairs=chosen.pairs,
        norm_features=chosen.norm_features,
        map="trees" if trees else "ridge",
        n_trees=trees.n_trees if trees else 0,
        tree_nodes=trees.max_nodes if trees else 0,
        tree_depth=trees.depth if trees else 0,
    )
    model = QualityViaTask(c.spec, 1, config)
    model.inner.load_state_dict(member.model.state_dict())
    if chosen.norm_features:
        model.set_norm_scaling(chosen.norm_mean, chosen.norm_std)
    if chosen.trees is not None:
        model.set_trees(chosen.trees)
    else:
        assert chosen.ridge is not None
        model.set_task_map(*chosen.ridge)
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
    fit = {
        "map": config.map,
        "pairs": chosen.pairs,
        "norm_features": chosen.norm_features,
        "ridge_alpha": chosen.ridge_alpha,
        "val_r2": chosen.val_r2,
        "candidates_val_r2": chosen.candidates,
    }
    meta = {**member.meta, "via_task": {"membership_predictor": c.predictor_id, **fit}}
    return Predictor(new_config, model.to(dtype).eval(), meta), fit


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="loravet via-task", description=__doc__.split("\n")[0])
    p.add_argument(
        "membership",
        type=Path,
        help="a membership predictor directory, or a via-task one to re-map",
    )
    p.add_argument("--zoo", type=Path, required=True, help="the zoo it was trained on")
    p.add_argument("--out", type=Path, required=True, help="quality predictor directory to write")
    p.add_argument("--predictor-id", help="default: the output directory's name")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        member = membership_model_of(load_predictor(args.membership))
        predictor, fit = compose(member, Zoo.open(args.zoo), args.predictor_id or args.out.name)
        save_predictor(predictor, args.out)
    except (CheckpointError, ZooError, ValueError, OSError) as exc:
        return fail(str(exc))
    features = "labels and pairs" if fit["pairs"] else "labels"
    features += " and module log norms" if fit["norm_features"] else ""
    how = f"ridge alpha {fit['ridge_alpha']:g}" if fit["map"] == "ridge" else "boosted trees"
    tried = ", ".join(f"{k} {v:.3f}" for k, v in fit["candidates_val_r2"].items())
    print(
        f"{args.out}: quality through {member.config.predictor_id}'s {member.config.out_features} "
        f"labels ({features}, {how}); validation R^2 {fit['val_r2']:.3f} (candidates: {tried})"
    )
    return 0
