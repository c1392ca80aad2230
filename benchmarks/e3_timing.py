"""E3: preprocessing and forward time per LoRA across GPT-3 sizes (the paper's Figure 5 analogue).

Synthetic rank-4 LoRAs with one square d x d module per layer. For each size and model:

- ``read_floor_s``: one pass over the factors in memory (summing them): no model can beat it;
- ``preprocess_s``: packing numpy factors into a ``LoraBatch`` (what every model needs) plus the
  model's own featurisation where it exposes one (``features``: QR singular values, alignment,
  dense delta);
- ``forward_s``: the model's full forward pass (featurisation included), per LoRA.

Before building a model its memory is estimated (parameters counted on the meta device, plus the
dense delta for ``mlp_dense``); above the cap the model is skipped with the bytes it would need, so
the machine is never taken down.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lora_io import LoraSpec, ModuleShape
from models import build_model
from models.dense_mlp import dense_memory_bytes
from models.lora_batch import LoraBatch


def gpt3_spec(layers: int, d: int) -> LoraSpec:
    return LoraSpec(tuple(ModuleShape(f"layers.{i}.attn", d, d) for i in range(layers)))


def synthetic_factors(
    spec: LoraSpec, batch: int, rank: int, seed: int = 0
) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal((n, rank), dtype=np.float32) * 0.01, rng.standard_normal((m, rank), dtype=np.float32) * 0.01)
             for n, m in spec.shapes] for _ in range(batch)]  # fmt: skip


def estimate_bytes(name: str, spec: LoraSpec, hparams: dict[str, Any], batch: int) -> int:
    """Parameters (counted on the meta device) plus, for mlp_dense, the dense deltas; bytes in float32.

    mlp_dense refuses to be built past its own cap; its need is then computed from the shapes.
    """
    factors = batch * sum(n + m for n, m in spec.shapes) * 4 * 4
    if name == "mlp_dense":
        dense = sum(n * m for n, m in spec.shapes)
        hidden = int(hparams.get("hidden", 16))
        return dense * hidden * 4 + dense_memory_bytes(spec, batch) * 2 + factors
    with torch.device("meta"):
        model = build_model(name, spec, 1, **hparams)
    return sum(p.numel() for p in model.parameters()) * 4 + factors


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one warm-up call (allocations, lazy init)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _measure(
    name: str,
    hparams: dict[str, Any],
    spec: LoraSpec,
    lora_batch: LoraBatch,
    batch: int,
    repeats: int,
) -> dict[str, float]:
    model = build_model(name, spec, 1, **hparams).eval()
    fit_to_data = getattr(model, "fit_to_data", None)
    if fit_to_data is not None:
        fit_to_data(lora_batch)
    with torch.no_grad():
        features = getattr(model, "features", None)
        feat = (
            median_time(lambda: features(lora_batch), repeats) / batch
            if callable(features)
            else 0.0
        )
        fwd = median_time(lambda: model(lora_batch), repeats) / batch
    return {"features_s": feat, "forward_s": fwd}


def run_size(
    size: dict[str, Any],
    models: dict[str, dict[str, Any]],
    rank: int,
    batch: int,
    repeats: int,
    cap_bytes: int,
) -> list[dict[str, Any]]:
    spec = gpt3_spec(size["layers"], size["d_model"])
    factors = synthetic_factors(spec, batch, rank)
    flat = [
        np.concatenate([np.concatenate([u.ravel(), v.ravel()]) for u, v in adapter])
        for adapter in factors
    ]
    floor = median_time(lambda: [float(x.sum()) for x in flat], repeats) / batch
    pack = median_time(lambda: LoraBatch.from_factors(spec, factors), repeats) / batch
    lora_batch = LoraBatch.from_factors(spec, factors)
    rows = []
    for name, hparams in models.items():
        row: dict[str, Any] = {"size": size["name"], "layers": size["layers"], "d_model": size["d_model"], "model": name,
                               "read_floor_s": floor, "pack_s": pack}  # fmt: skip
        need = estimate_bytes(name, spec, hparams, batch)
        row["estimated_bytes"] = need
        if need > cap_bytes:
            row.update(
                status="skipped",
                reason=f"needs about {need / 2**30:.1f} GiB, above the {cap_bytes / 2**30:.1f} GiB cap",
            )
            rows.append(row)
            continue
        try:
            row.update(status="ok", **_measure(name, hparams, spec, lora_batch, batch, repeats))
            row["ratio_to_floor"] = (pack + row["forward_s"]) / floor
            row["preprocess_s"] = pack + row["features_s"]
        except (MemoryError, RuntimeError, ValueError) as exc:
            row.update(status="skipped", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        gc.collect()
        rows.append(row)
    return rows


def run(spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    cap = int(spec["memory_cap_gb"] * 2**30)
    rows = []
    for size in spec["sizes"]:
        rows += run_size(
            size, spec["models"], spec["rank"], spec["batch_size"], spec["repeats"], cap
        )
        gc.collect()
    return {"rows": rows}
