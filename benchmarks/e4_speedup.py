"""E4: speed-up of GL-net over standard evaluation, per LoRA.

Standard evaluation time is what the zoo recorded for each finetune (``eval_seconds``: running the
finetuned model on its held-out clean and triggered inputs). GL-net's time is everything the worker
does for one adapter: read and validate the file, build the batch, predict.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from lora_io import LoraAdapter, load_adapter
from loravet import SHIPPED_PREDICTORS
from models import build_model
from models.lora_batch import LoraBatch
from models.registry import PredictorRegistry
from training.zoo_dataset import Zoo, adapter_paths


def run(zoo_dir: str, n: int = 200, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    zoo = Zoo.open(zoo_dir)
    ids = zoo.ids("all")[:n]  # timing only: every LoRA counts, whatever its split
    eval_seconds = [
        float(zoo.rows[i].doc.get("eval_seconds", zoo.rows[i].labels.get("eval_seconds", "nan")))
        for i in ids
    ]
    first = load_adapter(*adapter_paths(zoo, zoo.rows[ids[0]]))
    shipped = [  # the shipped harmful-finetune predictor: GL-net, or an ensemble of GL-nets
        p
        for p in PredictorRegistry.from_directory(SHIPPED_PREDICTORS).for_spec(first.spec)
        if p.config.task == "harmful" and p.config.model_name in ("gl_net", "gl_net_ensemble")
    ]
    if shipped:
        c = shipped[0].config
        predictor_id = f"{c.predictor_id}@{c.version} ({c.model_name})"
        predict: Callable[[list[LoraAdapter]], Any] = shipped[0].predict
    else:  # no shipped predictor for this zoo: an untrained GL-net costs the same time
        predictor_id = "untrained gl_net (default hparams)"
        model = build_model("gl_net", first.spec, 1, **(hparams or {})).eval()

        def untrained(adapters: list[LoraAdapter]) -> Any:
            with torch.no_grad():
                return model(LoraBatch.from_adapters(adapters, spec=first.spec))

        predict = untrained

    times = []
    for lora_id in ids:
        start = time.perf_counter()
        file, config = adapter_paths(zoo, zoo.rows[lora_id])
        predict([load_adapter(file, config=config)])
        times.append(time.perf_counter() - start)
    std_eval = statistics.median(eval_seconds)
    glnet = statistics.median(times)
    return {
        "n": len(ids),
        "median_standard_eval_s": std_eval,
        "median_glnet_read_and_predict_s": glnet,
        "speedup": std_eval / glnet,
        "predictor": predictor_id,
        "note": "standard evaluation = the zoo's recorded eval_seconds (held-out clean + triggered inputs, 1 CPU thread); "
        "GL-net = read + validate the safetensors file, batch, forward (1 CPU thread, batch of 1)",
    }
