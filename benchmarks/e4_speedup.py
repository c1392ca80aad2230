"""E4: speed-up of GL-net over standard evaluation, per LoRA, batched as the worker batches.

Standard evaluation time is what the zoo recorded for each finetune (``eval_seconds``: running the
finetuned model on its held-out clean and triggered inputs). GL-net's time is everything needed to
turn file bytes into a prediction: read the files, validate and pack them (``read_batches``: a
layout validated once per header as ``load_adapter`` validates a file, then every file's factors
checked finite and packed as one array per module), run the shipped harmful-finetune predictor once
per layout.
Timed per LoRA at several batch sizes, with the floor of each part measured in the same run: the
read at the machine's read bandwidth, the forward at its peak GEMM rate (the predictor's FLOPs
counted as the roofline benchmark counts them).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.e3_roofline import gl_net_cost, measure_peaks
from lora_io import load_adapter
from loravet import SHIPPED_PREDICTORS
from models import build_model
from models.file_batches import read_batches
from models.gl_net import GLNet
from models.lora_batch import LoraBatch
from models.registry import PredictorRegistry
from models.token_scan import TokenScan
from training.zoo_dataset import Zoo, adapter_paths

BATCH_SIZES = (1, 16, 64)


def _predictor(
    spec: Any, hparams: dict[str, Any] | None
) -> tuple[str, Callable[[LoraBatch], Any], torch.nn.Module]:
    """The shipped harmful-finetune predictor for this spec (whatever its model: a GL-net seed
    ensemble, or GL-net seeds beside a token scan), else an untrained GL-net."""
    shipped = [
        p
        for p in PredictorRegistry.from_directory(SHIPPED_PREDICTORS).for_spec(spec)
        if p.config.task == "harmful"
    ]
    if shipped:
        c = shipped[0].config
        return (
            f"{c.predictor_id}@{c.version} ({c.model_name})",
            shipped[0].predict,
            shipped[0].model,
        )
    model = build_model("gl_net", spec, 1, **(hparams or {})).eval()

    @torch.inference_mode()
    def untrained(batch: LoraBatch) -> Any:
        return model(batch)

    return "untrained gl_net (default hparams)", untrained, model


def _forward_flops(model: torch.nn.Module, spec: Any, rank: int) -> tuple[float, float]:
    """FLOPs per LoRA of the predictor's forward at ``rank``, (float32, bfloat16): every GL-net
    member, and a token scan's product of the probe table with each scanned module's factors
    (bfloat16 where the scan runs it so, float32 otherwise)."""
    members = [m for m in model.modules() if isinstance(m, GLNet)]
    flops, low = sum(gl_net_cost(spec, m.config, rank, 1)["flops"] for m in members), 0.0
    for scan in (m for m in model.modules() if isinstance(m, TokenScan)):
        if scan.probes is not None:
            n_probes, width = scan.probes.shape
            product = len(scan.module_index) * 2 * rank * width * n_probes
            flops += len(scan.module_index) * 2 * rank * width * width  # the mean, in closed form
            if scan.config.precision == "bfloat16":
                low += product
            else:
                flops += product
    return float(flops), float(low)


def run(zoo_dir: str, n: int = 192, hparams: dict[str, Any] | None = None) -> dict[str, Any]:
    torch.set_num_threads(1)
    zoo = Zoo.open(zoo_dir)
    ids = zoo.ids("all")[:n]  # timing only: every LoRA counts, whatever its split
    eval_seconds = [
        float(zoo.rows[i].doc.get("eval_seconds", zoo.rows[i].labels.get("eval_seconds", "nan")))
        for i in ids
    ]
    paths = [adapter_paths(zoo, zoo.rows[i]) for i in ids]
    first = load_adapter(*paths[0])
    predictor_id, predict, model = _predictor(first.spec, hparams)
    peaks = measure_peaks(gemm_n=2048, read_mib=512, tries=3)

    def read(chunk: list[tuple[Path, Path | None]]) -> list[tuple[list[int], LoraBatch]]:
        items = [(f.read_bytes(), c.read_bytes() if c else None) for f, c in chunk]
        return read_batches(items, first.spec)

    for _, batch in read(paths[:2]):  # warm-up
        predict(batch)
    by_batch = {}
    for batch_size in BATCH_SIZES:
        per_lora, reading = [], []
        for start in range(0, len(paths) - batch_size + 1, batch_size):
            t0 = time.perf_counter()
            parts = read(paths[start : start + batch_size])
            t1 = time.perf_counter()
            for _, batch in parts:  # one pass per layout (rank): no padding to a neighbour's rank
                predict(batch)
            t2 = time.perf_counter()
            per_lora.append((t2 - t0) / batch_size)
            reading.append((t1 - t0) / batch_size)
        by_batch[str(batch_size)] = {
            "read_and_predict_s": statistics.median(per_lora),
            "read_s": statistics.median(reading),
            "predict_s": statistics.median(per_lora) - statistics.median(reading),
            "chunks": len(per_lora),
        }
    file_bytes = statistics.median(p[0].stat().st_size for p in paths)
    rank = int(np.median([max(load_adapter(*p).ranks) for p in paths[:16]]))
    flops, low_flops = _forward_flops(model, first.spec, rank)
    floor = {
        "read_s": file_bytes / peaks["read_bytes_per_s"],
        "forward_s": flops / peaks["peak_flops"] + low_flops / peaks["peak_flops_bf16"],
    }
    std_eval = statistics.median(eval_seconds)
    best = min(by_batch.values(), key=lambda b: b["read_and_predict_s"])
    return {
        "n": len(ids),
        "median_standard_eval_s": std_eval,
        "median_glnet_read_and_predict_s": best["read_and_predict_s"],
        "speedup": std_eval / best["read_and_predict_s"],
        "by_batch": by_batch,
        "speedup_by_batch": {k: std_eval / v["read_and_predict_s"] for k, v in by_batch.items()},
        "floor": {
            **floor,
            "file_bytes": file_bytes,
            "forward_flops": flops,
            "forward_flops_bf16": low_flops,
            "rank": rank,
            **peaks,
        },
        "speedup_at_floor": std_eval / (floor["read_s"] + floor["forward_s"]),
        "predictor": predictor_id,
        "note": "standard evaluation = the zoo's recorded eval_seconds (held-out clean + triggered inputs, 1 CPU thread); "
        "GL-net = read the files, validate and pack them (read_batches), forward once per layout (1 CPU thread), per LoRA at batch 1, 16 and 64; "
        "the headline is the best batch size. Floor = file bytes / read bandwidth + forward FLOPs / peak GEMM rate, "
        "both measured in this run (a token scan's bfloat16 product at the bfloat16 GEMM peak).",
    }
