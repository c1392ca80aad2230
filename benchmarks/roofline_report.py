"""The E3 roofline result as a SUMMARY.md table and a plot (no torch: the summary runs anywhere)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GOAL_RATIO = 1.5
"""Issue 18's goal: GL-net's forward within 1.5x of the floor at batch 16 on every shape."""


def roofline_table(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["_no roofline result yet_"]
    rows = result["rows"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    lines = ["Machine limit measured in the same run (best of several tries):", "",
             "| threads | peak GEMM (float32) | read bandwidth |", "| --- | --- | --- |"]  # fmt: skip
    for m in result["machine"]:
        lines.append(
            f"| {m['threads']} | {m['peak_flops'] / 1e9:.1f} GFLOP/s | {m['read_bytes_per_s'] / 1e9:.1f} GB/s |"
        )
    lines += ["", "GL-net forward per LoRA / floor, floor = max(FLOPs / peak, bytes / bandwidth) "
              f"(goal: at most {GOAL_RATIO}x at batch 16); `before` = the adapter-by-adapter computation "
              "it replaced, same run:", "",
              "| threads | batch | " + " | ".join(sizes) + " |", "| --- | --- |" + " --- |" * len(sizes)]  # fmt: skip
    by = {(r["size"], r["threads"], r["batch"]): r for r in rows}
    for threads in sorted({r["threads"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows}):
            cells = [f"{by[(s, threads, batch)]['ratio']:.2f}x" for s in sizes]
            lines.append(f"| {threads} | {batch} | " + " | ".join(cells) + " |")
            befores = [by[(s, threads, batch)].get("before_ratio") for s in sizes]
            if all(b is not None for b in befores):
                lines.append(
                    f"| {threads} | {batch} before | "
                    + " | ".join(f"{b:.1f}x" for b in befores)
                    + " |"
                )
    one = {
        r["size"]: r
        for r in rows
        if r["threads"] == 1 and r["batch"] == max(r2["batch"] for r2 in rows)
    }
    lines += ["", "Per LoRA at 1 thread and the largest batch: "
              + "; ".join(f"{s} {one[s]['forward_s'] * 1e3:.3f} ms (floor {one[s]['floor_s'] * 1e3:.3f}, "
                          f"{one[s]['flops'] / 1e6:.1f} MFLOP, {one[s]['bound']}-bound)" for s in sizes if s in one) + "."]  # fmt: skip
    return lines


def roofline_plot(results_dir: Path, result: dict[str, Any] | None) -> list[str]:
    if not result:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = range(len(sizes))
    for threads in sorted({r["threads"] for r in rows}):
        for batch in sorted({r["batch"] for r in rows}):
            by = {r["size"]: r for r in rows if r["threads"] == threads and r["batch"] == batch}
            style = "-" if threads == 1 else "--"
            ax.plot(
                x,
                [by[s]["ratio"] for s in sizes],
                style,
                marker="o",
                label=f"batch {batch}, {threads} thread(s)",
            )
            if all(by[s].get("before_ratio") for s in sizes):
                ax.plot(x, [by[s]["before_ratio"] for s in sizes], style, color="grey", marker="x",
                        label=f"before, batch {batch}, {threads} thread(s)")  # fmt: skip
    ax.axhline(GOAL_RATIO, color="k", linewidth=0.8, linestyle=":", label=f"goal {GOAL_RATIO}x")
    ax.axhline(1.0, color="k", linewidth=0.8)
    ax.set_xticks(list(x), sizes)
    ax.set_yscale("log")
    ax.set_xlabel("GPT-3 size (one d x d rank-4 LoRA per layer)")
    ax.set_ylabel("forward time / roofline floor")
    ax.set_title("GL-net (h=16, 2 layers) against this machine's measured limit", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(results_dir / "e3_roofline.png", dpi=110)
    plt.close(fig)
    return ["e3_roofline.png"]
