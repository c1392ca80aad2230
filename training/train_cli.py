"""``loravet train``: fit a predictor on a zoo and write a checkpoint (safetensors + json).

    loravet train --zoo zoos/digits --task harmful --model gl_net --seed 0 --out runs/digits-harmful-gl
    loravet train --zoo zoos/digits --task quality --model mlp --augment-gl --epochs 20 --out runs/q-mlp
    loravet train --zoo zoos/minilm-topics --task harmful --model token_scan \
        --settings benchmarks/experiments/e1_models_tasks.json --out runs/scan   # on clean LoRAs
    loravet train --zoo zoos/minilm-topics --task harmful --model gl_net \
        --settings benchmarks/experiments/e1_models_tasks.json --out predictors/minilm-topics-harmful-gl_net

``--settings`` takes the model's hyperparameters and training settings for this zoo and task from an
experiment spec (overrides applied), so a shipped predictor is trained exactly as it was benchmarked;
flags given on the command line win over the spec.

The checkpoint's meta.json holds the validation metrics, the chosen threshold, the zoo manifest
hash, the git sha and package versions.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from core.cli_support import Parser, fail
from core.provenance import provenance
from models.predictor import Predictor, PredictorConfig, save_predictor
from training.experiment_settings import SettingsError, train_settings
from training.train_loop import TrainConfig, fit
from training.zoo_dataset import TASKS, TaskData, Zoo, ZooError, load_task
from zoo.zoo_manifest import zoo_digests

MODELS = (
    "gl_net", "mlp", "mlp_dense", "mlp_svd", "mlp_oalign", "transformer", "norm_stats", "w2t",
    "token_scan",
)  # fmt: skip
FIT_ON_CLEAN = ("token_scan",)
"""Models fitted on the clean finetunes of the train split only: their fitted state is a baseline
of what clean finetunes look like (a backdoor in it would hide its own trigger)."""


def build_parser() -> Parser:
    p = Parser(prog="loravet train", description="Train a LoRA predictor on a zoo.")
    p.add_argument("--zoo", required=True, help="zoo directory (manifest.jsonl, splits.json)")
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-split", default="train", help="split to fit on (e.g. rank_generalisation/train)"
    )
    p.add_argument("--val-split", default="val")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--patience", type=int, default=15)
    p.add_argument(
        "--augment-gl",
        action="store_true",
        help="random GL(r) transform of every training minibatch",
    )
    p.add_argument(
        "--hparams", default="{}", help="model hyperparameters as JSON, e.g. '{\"hidden\": 32}'"
    )
    p.add_argument("--predictor-id", help="id in reports (default: <zoo name>-<task>-<model>)")
    p.add_argument(
        "--settings",
        help="experiment spec JSON to take --hparams and the training flags from "
        "(e.g. benchmarks/experiments/e1_models_tasks.json); explicit flags win",
    )
    return p


def recipe_name(zoo: Zoo) -> str:
    """The recipe that built the zoo (``zoo.json``), else its directory's name: the key of spec
    overrides and the prefix of predictor ids."""
    return zoo.info.get("recipe", zoo.root.name)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Zoo]:
    """The arguments and the opened zoo. Parse twice when ``--settings`` is given: the spec's values
    for the zoo's recipe become the defaults, so only flags the user typed override them."""
    parser = build_parser()
    args = parser.parse_args(argv)
    zoo = Zoo.open(args.zoo)
    if args.settings:
        hparams, train = train_settings(args.settings, recipe_name(zoo), args.task, args.model)
        parser.set_defaults(hparams=json.dumps(hparams), **train)
        args = parser.parse_args(argv)
    return args, zoo


def clean_only(data: TaskData, model: str) -> TaskData:
    """The clean finetunes of ``data`` (harmful task), for models fitted on a clean baseline."""
    if data.y.shape[1] != 1 or not np.isin(data.y, (0.0, 1.0)).all():
        raise ZooError(f"{model} is fitted on clean finetunes: train it with --task harmful")
    keep = np.flatnonzero(data.y[:, 0] == 0)
    if len(keep) == 0:
        raise ZooError(f"{model} is fitted on clean finetunes, and the train split has none")
    return TaskData([data.ids[k] for k in keep], data.batch.select(keep.tolist()), data.y[keep])


def run(args: argparse.Namespace, zoo: Zoo) -> dict:
    torch.set_num_threads(1)
    try:
        hparams = json.loads(args.hparams)
    except json.JSONDecodeError as exc:
        raise ZooError(f"--hparams is not valid JSON: {exc}") from None
    config = TrainConfig(
        task=args.task, model=args.model, seed=args.seed, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, augment_gl=args.augment_gl, patience=args.patience,
        hparams=hparams,
    )  # fmt: skip
    train = load_task(zoo, args.train_split, args.task)
    val = load_task(zoo, args.val_split, args.task, spec=train.batch.spec)
    if args.model in FIT_ON_CLEAN:
        train = clean_only(train, args.model)
    result = fit(config, train, val)
    zoo_name = recipe_name(zoo)
    base = next(iter(zoo.rows.values())).doc.get("base_model", zoo_name)
    pconfig = PredictorConfig(
        predictor_id=args.predictor_id or f"{zoo_name}-{args.task}-{args.model}",
        version=f"seed{args.seed}",
        task=args.task,
        model_name=args.model,
        hparams=hparams,
        spec=train.batch.spec,
        out_features=train.y.shape[1],
        target_mean=[float(x) for x in result.target_mean],
        target_std=[float(x) for x in result.target_std],
        threshold=result.threshold,
        label_names=zoo.label_names(args.task),
        base_model=str(base),
    )
    meta = {
        "train_config": {**config.__dict__},
        "zoo": str(zoo.root),
        "zoo_recipe": zoo_name,
        "n_train": len(train),
        "n_val": len(val),
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "val_metrics": result.val_metrics,
        "history": result.history,
        "provenance": provenance(zoo_digests(zoo.root)),
    }
    save_predictor(Predictor(pconfig, result.model, meta), Path(args.out))
    return meta


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args, zoo = parse_args(argv)
        meta = run(args, zoo)
    except (ZooError, SettingsError, ValueError, OSError) as exc:
        return fail(str(exc))
    print(json.dumps({"out": args.out, "best_epoch": meta["best_epoch"], "val_metrics": meta["val_metrics"],
                      "train_seconds": round(meta["train_seconds"], 2)}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
