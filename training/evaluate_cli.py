"""``loravet evaluate``: metrics of a checkpoint on a zoo split, as JSON.

    loravet evaluate runs/digits-harmful-gl --zoo zoos/digits --split test --out metrics.json
    loravet evaluate predictors/minilm-topics-harmful-gl_net --zoo zoos/minilm-topics --by trigger

``--by NAME`` adds the metrics per value of a hyperparameter the recipe drew
(:mod:`training.group_metrics`): which triggers, ranks or poison counts a detector misses.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from core.cli_support import Parser, fail
from models.predictor import load_predictor
from training.group_metrics import metrics_by
from training.train_loop import task_metrics
from training.zoo_dataset import Zoo, ZooError, load_task


def evaluate(
    checkpoint: str | Path, zoo_dir: str | Path, split: str, by: tuple[str, ...] = ()
) -> dict:
    torch.set_num_threads(1)
    predictor = load_predictor(checkpoint)
    zoo = Zoo.open(zoo_dir)
    data = load_task(zoo, split, predictor.config.task, spec=predictor.config.spec)
    start = time.perf_counter()
    pred = np.asarray(predictor.predict(data.batch), dtype=np.float64)
    seconds = time.perf_counter() - start
    task, threshold = predictor.config.task, predictor.config.threshold
    result = task_metrics(task, data.y, pred, threshold)
    groups = {name: metrics_by(zoo, name, task, data.ids, data.y, pred, threshold) for name in by}
    return {
        "checkpoint": str(checkpoint),
        "predictor_id": predictor.config.predictor_id,
        "task": predictor.config.task,
        "model": predictor.config.model_name,
        "zoo": str(zoo_dir),
        "split": split,
        "n": len(data),
        "metrics": result,
        "predict_seconds_per_lora": seconds / len(data),
        **({"by": groups} if groups else {}),
    }


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="loravet evaluate", description="Evaluate a trained predictor on a zoo split.")
    p.add_argument("checkpoint", help="checkpoint directory written by `loravet train`")
    p.add_argument("--zoo", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="also write the metrics JSON here")
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="HYPERPARAMETER",
        help="also the metrics per value of this drawn hyperparameter (e.g. trigger, rank, n_poisoned)",
    )
    args = p.parse_args(argv)
    try:
        result = evaluate(args.checkpoint, args.zoo, args.split, tuple(args.by))
    except (ZooError, ValueError, OSError) as exc:
        return fail(str(exc))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
