"""E3 roofline: GL-net's forward per LoRA against this machine's limit, measured in the same run.

For each GPT-3 shape (one d x d rank-r LoRA per layer, as E3), batch size and thread count:

- the machine's peak matmul rate (float32 GEMM of ``peak_gemm_n``-square matrices) and read
  bandwidth (a sum over a buffer far larger than the caches), best of several tries at that thread
  count: what no kernel on this machine beats;
- GL-net's FLOPs and bytes per LoRA (every matmul of the configured model counted; bytes = the
  factors read once, plus the parameters read once per batch);
- the floor ``max(FLOPs / peak, bytes / bandwidth)`` and the measured forward time's ratio to it,
  for the rank-major implementation and, at one batch size, for the adapter-by-adapter one it
  replaced (``models.gl_net_reference``).

The factors are packed in a ``LoraBatch`` beforehand: this is the model's floor, not the file's
(E4 measures file bytes to predictions).
"""

from __future__ import annotations

import functools
import gc
from typing import Any

import torch

from benchmarks.e3_timing import gpt3_spec, median_time
from lora_io import LoraSpec
from models.gl_net import GLNet, GLNetConfig
from models.gl_net_reference import batch_major_forward
from models.synthetic_loras import random_lora_batch


def measure_peaks(gemm_n: int, read_mib: int, tries: int) -> dict[str, float]:
    """Best GEMM rate (FLOP/s; float32, and bfloat16 for the token scan's product) and read
    bandwidth (bytes/s) at the current torch thread count."""
    a, b = torch.randn(gemm_n, gemm_n), torch.randn(gemm_n, gemm_n)
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    buffer = torch.randn(read_mib * 2**20 // 4)
    gemm_s = min(median_time(lambda: a @ b, 3) for _ in range(tries))
    gemm16_s = min(median_time(lambda: a16 @ b16, 3) for _ in range(tries))
    read_s = min(median_time(buffer.sum, 3) for _ in range(tries))
    return {
        "peak_flops": 2 * gemm_n**3 / gemm_s,
        "peak_flops_bf16": 2 * gemm_n**3 / gemm16_s,
        "read_bytes_per_s": buffer.numel() * 4 / read_s,
    }


def gl_net_cost(spec: LoraSpec, config: GLNetConfig, rank: int, batch: int) -> dict[str, float]:
    """FLOPs and bytes per LoRA of one GL-net forward (multiply-adds count 2; elementwise work,
    O(h r) per module, is left out: it is below 1% of the first layer at every E3 shape)."""
    h, r, L = config.hidden, rank, len(spec)
    first = sum(2 * h * (n + m) * r for n, m in spec.shapes)  # P_i U_i and Q_i V_i
    hidden = (config.n_layers - 1) * L * 2 * (2 * h * h * r)  # A_i U_i and B_i V_i
    n_features = {"flatten": L * h * h, "mean": L, "norms": L * (2 * h + 1)}[config.pool]
    invariants = {
        "flatten": L * 2 * h * h * r,  # U_i V_i^T
        "mean": 0,
        "norms": L * 2 * (2 * h * r * r + 2 * h * r * r),  # two Gram matrices, two products
    }[config.pool]
    head = 2 * n_features * config.head_dim + 2 * config.head_dim
    with torch.device("meta"):
        n_params = sum(p.numel() for p in GLNet(spec, 1, config).parameters())
    factor_bytes = sum(4 * (n + m) * r for n, m in spec.shapes)
    return {
        "flops": float(first + hidden + invariants + head),
        "bytes": factor_bytes + 4 * n_params / batch,
        "first_layer_share": first / (first + hidden + invariants + head),
    }


def _measure_size(
    size: dict[str, Any], spec: dict[str, Any], config: GLNetConfig, peaks: dict[str, float]
) -> list[dict[str, Any]]:
    """Rows of one GPT-3 shape at every batch size (the current torch thread count)."""
    lora_spec = gpt3_spec(size["layers"], size["d_model"])
    biggest = random_lora_batch(lora_spec, max(spec["batch_sizes"]), spec["rank"], std=0.01)
    torch.manual_seed(0)
    model = GLNet(lora_spec, 1, config).eval()
    model.fit_to_data(biggest)
    rows = []
    for batch_size in spec["batch_sizes"]:
        batch = biggest.select(list(range(batch_size)))
        cost = gl_net_cost(lora_spec, config, spec["rank"], batch_size)
        compute_s = cost["flops"] / peaks["peak_flops"]
        memory_s = cost["bytes"] / peaks["read_bytes_per_s"]
        floor = max(compute_s, memory_s)
        with torch.no_grad():
            forward = median_time(functools.partial(model, batch), spec["repeats"]) / batch_size
            before = None
            if batch_size == spec["before_batch_size"]:
                before = median_time(
                    functools.partial(batch_major_forward, model, batch), spec["before_repeats"]
                )
                before /= batch_size
        rows.append({
            "size": size["name"], "layers": size["layers"], "d_model": size["d_model"],
            "threads": torch.get_num_threads(), "batch": batch_size, **cost,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "floor_s": floor, "forward_s": forward, "ratio": forward / floor,
            "before_forward_s": before, "before_ratio": before / floor if before else None,
        })  # fmt: skip
    return rows


def run(spec: dict[str, Any]) -> dict[str, Any]:
    config = GLNetConfig(**spec["gl_net"])
    rows, machine = [], []
    for threads in spec["threads"]:
        torch.set_num_threads(threads)
        peaks = measure_peaks(spec["peak_gemm_n"], spec["peak_read_mib"], spec["peak_tries"])
        machine.append({"threads": threads, **peaks})
        for size in spec["sizes"]:
            rows += _measure_size(size, spec, config, peaks)
            gc.collect()
    torch.set_num_threads(1)
    return {"machine": machine, "rows": rows}
