"""The roofline benchmark: its FLOP count is the model's, its table and plot come out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import e3_roofline, summary
from benchmarks.e3_timing import gpt3_spec
from models.gl_net import GLNet, GLNetConfig
from models.synthetic_loras import random_lora_batch

TINY = {
    "rank": 4,
    "gl_net": {"hidden": 4, "n_layers": 2},
    "batch_sizes": [1, 4],
    "threads": [1],
    "repeats": 1,
    "before_batch_size": 4,
    "before_repeats": 1,
    "peak_gemm_n": 128,
    "peak_read_mib": 8,
    "peak_tries": 1,
    "sizes": [
        {"name": "tiny", "layers": 2, "d_model": 32},
        {"name": "small", "layers": 3, "d_model": 64},
    ],
}


@pytest.mark.parametrize("pool", ["flatten", "norms", "mean"])
def test_the_flop_count_is_what_torch_counts_in_the_forward(pool: str) -> None:
    spec, batch_size = gpt3_spec(3, 64), 5
    config = GLNetConfig(hidden=8, n_layers=3, head_dim=16, pool=pool)
    model = GLNet(spec, 1, config).eval()
    batch = random_lora_batch(spec, batch_size, 4)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    counted = counter.get_total_flops() / batch_size
    assert e3_roofline.gl_net_cost(spec, config, 4, batch_size)["flops"] == pytest.approx(
        counted, rel=0.01
    )


def test_roofline_rows_table_and_plot(tmp_path: Path) -> None:
    result = e3_roofline.run(TINY)
    assert [m["threads"] for m in result["machine"]] == [1]
    assert (
        result["machine"][0]["peak_flops"] > 1e8 and result["machine"][0]["read_bytes_per_s"] > 1e8
    )
    rows = {(r["size"], r["batch"]): r for r in result["rows"]}
    assert set(rows) == {("tiny", 1), ("tiny", 4), ("small", 1), ("small", 4)}
    assert all(r["ratio"] > 0 and r["forward_s"] >= r["floor_s"] * 0.5 for r in rows.values())
    assert rows[("tiny", 4)]["before_ratio"] > 0 and rows[("tiny", 1)]["before_ratio"] is None
    (tmp_path / "e3").mkdir()
    (tmp_path / "e3" / "e3_roofline.json").write_text(
        json.dumps({"provenance": {"git_sha": "abc"}, **result})
    )
    text = summary.write_summary(tmp_path).read_text()
    assert "### E3 roofline" in text and "| 1 | 4 before |" in text
    assert (tmp_path / "e3_roofline.png").stat().st_size > 1000
