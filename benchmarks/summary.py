"""Regenerate ``results/SUMMARY.md`` and the PNG plots from the committed result JSON files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.roofline_report import roofline_plot, roofline_table

MODELS = ("gl_net", "mlp", "mlp_dense", "mlp_svd", "mlp_oalign", "transformer", "norm_stats", "w2t",
          "token_scan")  # fmt: skip
HEADLINE = {
    "quality": ("r2", "R^2"),
    "harmful": ("auroc", "AUROC"),
    "membership": ("per_label_accuracy", "per-label acc."),
}


def _load(folder: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if folder.is_dir()
        else []
    )


def _fmt(cell: dict[str, float] | None) -> str:
    if not cell or cell["mean"] != cell["mean"]:
        return "-"
    return f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def e1_table(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return ["_no results yet_"]
    cols = sorted({(r["zoo"], r["task"]) for r in results})
    lines = ["| model | " + " | ".join(f"{z} {t} ({HEADLINE[t][1]})" for z, t in cols) + " |",
             "| --- |" + " --- |" * len(cols)]  # fmt: skip
    by = {(r["zoo"], r["task"], r["model"]): r for r in results}
    for model in MODELS:
        cells = [
            _fmt(by[(z, t, model)]["summary"].get(HEADLINE[t][0])) if (z, t, model) in by else "-"
            for z, t in cols
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    extra = sorted({(r["zoo"], r["task"]) for r in results if r["task"] == "harmful"})
    if extra:
        lines += ["", "Harmful detection, TPR at 1% FPR (with fewer than 100 clean test LoRAs this is the TPR at 0 false positives):", "",
                  "| model | " + " | ".join(z for z, _ in extra) + " |", "| --- |" + " --- |" * len(extra)]  # fmt: skip
        for model in MODELS:
            cells = [
                _fmt(by[(z, "harmful", model)]["summary"].get("tpr_at_1pct_fpr"))
                if (z, "harmful", model) in by
                else "-"
                for z, _ in extra
            ]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


# The targets issue 5 sets for E1 (quality R^2 on every zoo, harmful detection on minilm-topics).
GOALS: dict[tuple[str | None, str, str], float] = {
    (None, "quality", "r2"): 0.8,
    ("minilm-topics", "harmful", "auroc"): 0.95,
    ("minilm-topics", "harmful", "tpr_at_1pct_fpr"): 0.8,
}


def _cell(result: dict[str, Any] | None, metric: str) -> dict[str, float] | None:
    cell = (result or {}).get("summary", {}).get(metric)
    return cell if cell and cell["mean"] == cell["mean"] else None


def goals_table(results: list[dict[str, Any]]) -> list[str]:
    """E1 against its goals: per zoo and task, the best model and where GL-net stands.

    GL-net counts as tied when the gap to the best mean is within the two models' seed stds added
    (their mean ± std intervals overlap); a numeric goal is met when GL-net's mean reaches it."""
    if not results:
        return ["_no results yet_"]
    by = {(r["zoo"], r["task"], r["model"]): r for r in results}
    lines = ["| zoo / task (metric) | best model | gl_net | gl_net vs best | goal | gl_net vs goal |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for zoo, task in sorted({(r["zoo"], r["task"]) for r in results}):
        metrics = [HEADLINE[task][0]] + (["tpr_at_1pct_fpr"] if task == "harmful" else [])
        for metric in metrics:
            cells = {m: _cell(by.get((zoo, task, m)), metric) for m in MODELS}
            ran = {m: c for m, c in cells.items() if c is not None}
            if not ran:
                continue
            best = max(ran, key=lambda m: ran[m]["mean"])
            gl = ran.get("gl_net")
            if gl is None:
                standing = "not run"
            elif best == "gl_net":
                standing = "best"
            else:
                gap = ran[best]["mean"] - gl["mean"]
                tied = gap <= ran[best]["std"] + gl["std"]
                standing = f"{'tied' if tied else 'behind'} (-{gap:.3f})"
            goal = GOALS.get((zoo, task, metric), GOALS.get((None, task, metric)))
            if goal is None or gl is None:
                versus = "-"
            else:
                versus = "met" if gl["mean"] >= goal else f"missed by {goal - gl['mean']:.3f}"
            lines.append(
                f"| {zoo} / {task} ({metric}) | {best} {_fmt(ran[best])} | {_fmt(gl)} | {standing} "
                f"| {'-' if goal is None else f'>= {goal}'} | {versus} |"
            )
    return lines


def e2_table(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return ["_no results yet_"]
    lines = []
    for zoo, task in sorted({(r["zoo"], r["task"]) for r in results}):
        rows = [r for r in results if r["zoo"] == zoo and r["task"] == task]
        ranks = sorted({int(k) for r in rows for k in r["summary"]})
        key, label = HEADLINE[task]
        lines += [f"**{zoo} / {task}** ({label}; trained on rank 4)", "", "| model | " + " | ".join(f"r={k}" for k in ranks) + " |",
                  "| --- |" + " --- |" * len(ranks)]  # fmt: skip
        for r in sorted(rows, key=lambda r: MODELS.index(r["model"])):
            lines.append(
                f"| {r['model']} | "
                + " | ".join(_fmt(r["summary"].get(str(k), {}).get(key)) for k in ranks)
                + " |"
            )
        sizes = rows[0].get("test_sizes", {})
        if sizes:  # small per-rank test sets make a difference between ranks noise; say so
            lines.append(
                "| _test LoRAs_ | " + " | ".join(str(sizes.get(str(k), "-")) for k in ranks) + " |"
            )
        lines.append("")
    return lines


def e5_table(results: list[dict[str, Any]], e1: list[dict[str, Any]]) -> list[str]:
    """Quality read through the task, beside the same model's direct quality head from E1."""
    if not results:
        return ["_no results yet_"]
    direct = {(r["zoo"], r["model"]): r for r in e1 if r["task"] == "quality"}
    lines = ["| zoo | model | membership acc. (test) | quality R^2 via task | Kendall tau | "
             "ceiling: true labels R^2 | E1 direct quality R^2 |", "| --- |" + " --- |" * 6]  # fmt: skip
    for r in sorted(results, key=lambda r: (r["zoo"], MODELS.index(r["model"]))):
        e1_cell = _cell(direct.get((r["zoo"], r["model"])), "r2")
        lines.append(
            f"| {r['zoo']} | {r['model']} | {_fmt(r['summary'].get('membership_accuracy'))} "
            f"| {_fmt(r['summary'].get('r2'))} | {_fmt(r['summary'].get('kendall_tau'))} "
            f"| {r['oracle']['r2']:.3f} | {_fmt(e1_cell)} |"
        )
    return lines


def e3_table(result: dict[str, Any] | None) -> list[str]:
    if not result:
        return ["_no results yet_"]
    rows = result["rows"]
    sizes = list(dict.fromkeys(r["size"] for r in rows))
    lines = ["Forward time per LoRA in ms (pack = numpy factors to batch; floor = one read of the factors):", "",
             "| model | " + " | ".join(sizes) + " |", "| --- |" + " --- |" * len(sizes)]  # fmt: skip
    by = {(r["size"], r["model"]): r for r in rows}
    floor = {r["size"]: r["read_floor_s"] for r in rows}
    lines.append("| read floor | " + " | ".join(f"{floor[s] * 1e3:.2f}" for s in sizes) + " |")
    for model in MODELS:
        cells = []
        for s in sizes:
            r = by.get((s, model))
            if r is None:
                cells.append("-")
            elif r["status"] != "ok":
                cells.append(f"skip ({r['estimated_bytes'] / 2**30:.0f} GiB)")
            else:
                cells.append(f"{r['forward_s'] * 1e3:.2f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    gl = [r for s in sizes if (r := by.get((s, "gl_net"))) is not None]
    if len(gl) == len(sizes) and all(r["status"] == "ok" and r.get("ratio_to_floor") for r in gl):
        lines.append("| gl_net (pack + forward) / floor | "
                     + " | ".join(f"{r['ratio_to_floor']:.0f}x" for r in gl) + " |")  # fmt: skip
    return lines


def e4_table(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return ["_no results yet_"]
    lines = [
        "Per LoRA, 1 CPU thread: read + validate the file, pack, predict with the shipped harmful "
        "predictor (or an untrained GL-net where none ships). Floor = file bytes / read bandwidth + "
        "forward FLOPs / peak GEMM rate, measured in the same run (a token scan's bfloat16 product "
        "at the bfloat16 peak).",
        "",
        "| zoo | predictor | standard eval (s) | batch 1 | batch 16 | batch 64 | speed-up (best) | floor (speed-up at floor) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        by = r.get("by_batch", {})

        def cell(b: str, by: dict[str, Any] = by, r: dict[str, Any] = r) -> str:
            if b not in by:
                return "-"
            t = by[b]["read_and_predict_s"]
            return f"{t * 1e3:.2f} ms (read {by[b]['read_s'] * 1e3:.2f}), {r['median_standard_eval_s'] / t:,.0f}x"

        floor = r.get("floor")
        floor_text = (
            f"{(floor['read_s'] + floor['forward_s']) * 1e6:.0f} us ({r['speedup_at_floor']:,.0f}x)"
            if floor
            else "-"
        )
        lines.append(
            f"| {r['zoo']} | {r.get('predictor', '?')} | {r['median_standard_eval_s']:.3f} | {cell('1')} | "
            f"{cell('16')} | {cell('64')} | {r['speedup']:,.0f}x | {floor_text} |"
        )
    return lines


def e4_worker_table(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return ["_no results yet_"]
    lines = [
        "One resident worker (1 torch thread) through the real stack, queue filled while it was paused, "
        "shipped predictors; overhead = time per job minus `vet_batch`'s own time per job at that batch size.",
        "",
        "| zoo | batch | jobs/s | ms per job | of which vet_batch | worker overhead per job |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for b, row in r["by_batch"].items():
            lines.append(
                f"| {r['zoo']} | {b} | {row['jobs_per_s']:.1f} | {row['seconds_per_job'] * 1e3:.1f} | "
                f"{row['vet_batch_seconds_per_job'] * 1e3:.1f} | {row['overhead_seconds_per_job'] * 1e3:.1f} |"
            )
    return lines


def e6_table(results: list[dict[str, Any]]) -> list[str]:
    """Verdicts per zoo, before (the first result kept) and now, and the checks' false alarms."""
    if not results:
        return ["_no results yet_"]
    lines = [
        "| zoo | result (commit) | clean: accept / review / reject | harmful: reject / review / accept |",
        "| --- | --- | --- | --- |",
    ]

    def share(row: dict[str, int], order: tuple[str, ...]) -> str:
        n = sum(row.values())
        return " / ".join(f"{row[v]} ({row[v] / n:.0%})" for v in order) if n else "-"

    for r in results:
        sha = ((r.get("provenance") or {}).get("git_sha") or "?")[:10]
        c = r["verdicts"]["counts"]
        lines.append(
            f"| {r['zoo']} | {r['_label']} ({sha}) | {share(c['clean'], ('accept', 'review', 'reject'))} "
            f"| {share(c['harmful'], ('reject', 'review', 'accept'))} |"
        )
    lines += ["", "Warn-level static checks: share of each zoo's clean finetunes (all splits) they warn on (goal: at most 1%).", "",
              "| zoo | result | " + " | ".join(sorted(results[0]["check_false_alarms"]["checks"])) + " |",
              "| --- | --- | " + " | ".join("---" for _ in results[0]["check_false_alarms"]["checks"]) + " |"]  # fmt: skip
    for r in results:
        checks = r["check_false_alarms"]["checks"]
        lines.append(
            f"| {r['zoo']} | {r['_label']} | "
            + " | ".join(f"{checks[n]['warn_rate']:.1%}" for n in sorted(checks))
            + " |"
        )
    return lines


def e7_table(results: list[dict[str, Any]]) -> list[str]:
    if not results:
        return ["_no results yet_"]
    lines = ["| zoo | model | held-out triggers | AUROC seen (test) | AUROC unseen | gap (seen - unseen) | TPR@1%FPR seen / unseen | test backdoors seen / unseen |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(
        results, key=lambda r: (r["zoo"], MODELS.index(r["model"]) if r["model"] in MODELS else 99)
    ):
        s, sizes = r["summary"], r["test_sizes"]
        gap = r["auroc_gap"]["per_seed"]
        spread = (sum((g - r["auroc_gap"]["mean"]) ** 2 for g in gap) / len(gap)) ** 0.5
        lines.append(
            f"| {r['zoo']} | {r['model']} | {', '.join(r['held_out_triggers'])} | {_fmt(s['seen']['auroc'])} "
            f"| {_fmt(s['unseen']['auroc'])} | {r['auroc_gap']['mean']:+.3f} ± {spread:.3f} "
            f"| {s['seen']['tpr_at_1pct_fpr']['mean']:.3f} / {s['unseen']['tpr_at_1pct_fpr']['mean']:.3f} "
            f"| {sizes['seen']['harmful']} / {sizes['unseen']['harmful']} |"
        )  # fmt: skip
    return lines


def ensemble_table(results: list[dict[str, Any]]) -> list[str]:
    """``benchmarks/architecture_ensemble.py``: every combination, val beside test (val chooses)."""
    if not results:
        return ["_no results yet_"]
    lines = ["| zoo | combination | val AUROC | val TPR@1%FPR | test AUROC | test TPR@1%FPR | val / test LoRAs |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(results, key=lambda r: r["zoo"]):
        for row in r["rows"]:
            v, t = row["val"], row["test"]
            lines.append(
                f"| {r['zoo']} | {row['combination']} | {v['auroc']:.3f} | {v['tpr_at_1pct_fpr']:.3f} "
                f"| {t['auroc']:.3f} | {t['tpr_at_1pct_fpr']:.3f} | {r['n_val']} / {r['n_test']} |"
            )  # fmt: skip
    return lines


def e6_calibration_table(results: list[dict[str, Any]]) -> list[str]:
    """The read-out fitted on val, measured on test (only the current results)."""
    rows = [r for r in results if r["_label"] == "now" and r.get("calibration")]
    if not rows:
        return []
    from benchmarks.calibration_noise import ece_noise_floor, scored_probabilities

    lines = ["Calibration on the test split (fitted on validation): harmful probability ECE "
             "(goal <= 0.05) and quality interval coverage. ECE is biased upwards on a small "
             "split, so beside it stands the ECE a perfectly calibrated predictor would show on the "
             "same test probabilities (labels drawn from them, 2,000 draws: mean / 95th percentile; "
             "`benchmarks/calibration_noise.py`).", "",
             "| zoo | harmful ECE uncalibrated | harmful ECE calibrated | ECE if perfectly calibrated "
             "(mean / p95) | quality R^2 (test) | quality interval coverage (target) | quality decides |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in rows:
        h, q = r["calibration"].get("harmful", {}), r["calibration"].get("quality", {})

        def num(d: dict[str, Any], k: str, f: str = ".3f") -> str:
            return format(d[k], f) if d.get(k) is not None else "-"

        target = f" ({q['coverage_target']:.0%})" if q.get("coverage_target") else ""
        probs = scored_probabilities(r) if h.get("ece") is not None else None
        floor = ece_noise_floor(probs) if probs is not None and probs.size else None
        noise = f"{floor['mean']:.3f} / {floor['p95']:.3f}" if floor else "-"
        lines.append(
            f"| {r['zoo']} | {num(h, 'ece_uncalibrated')} | {num(h, 'ece')} | {noise} | {num(q, 'r2')} | "
            f"{num(q, 'coverage', '.1%')}{target} | {q.get('decides', '-')} |"
        )
    return lines


def _e6_plots(results_dir: Path, results: list[dict[str, Any]]) -> list[str]:
    """A reliability plot per zoo: mean predicted P(harmful) against the harmful share, per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for r in results:
        h = (r.get("calibration") or {}).get("harmful")
        if r["_label"] != "now" or not h or "bins" not in h:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
        for key, label, style in (
            ("bins_uncalibrated", "uncalibrated", "s--"),
            ("bins", "calibrated", "o-"),
        ):
            bins = h.get(key) or []
            ax.plot([b["mean_probability"] for b in bins], [b["harmful_share"] for b in bins], style,
                    label=f"{label} (ECE {h.get('ece' if key == 'bins' else 'ece_uncalibrated', float('nan')):.3f})")  # fmt: skip
        ax.set_xlabel("predicted P(harmful), bin mean")
        ax.set_ylabel("share harmful in the bin")
        ax.set_title(f"{r['zoo']}: test split, {h['n']} LoRAs", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"e6_{r['zoo']}_reliability.png"
        fig.savefig(results_dir / name, dpi=110)
        plt.close(fig)
        made.append(name)
    return made


def _load_e6(folder: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        doc = json.loads(path.read_text())
        doc["_label"] = "before" if path.name.endswith(".before.json") else "now"
        out.append(doc)
    return sorted(out, key=lambda d: (d["zoo"], d["_label"] != "before"))


def _plots(results_dir: Path, e2: list[dict[str, Any]], e3: dict[str, Any] | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    if e3:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        rows = e3["rows"]
        sizes = list(dict.fromkeys(r["size"] for r in rows))
        x = range(len(sizes))
        ax.plot(
            x,
            [next(r["read_floor_s"] for r in rows if r["size"] == s) * 1e3 for s in sizes],
            "k--",
            label="read floor",
        )
        for model in MODELS:
            ys = [
                next(
                    (
                        r["forward_s"] * 1e3
                        for r in rows
                        if r["size"] == s and r["model"] == model and r["status"] == "ok"
                    ),
                    float("nan"),
                )
                for s in sizes
            ]
            ax.plot(x, ys, marker="o", label=model)
        ax.set_xticks(list(x), sizes)
        ax.set_yscale("log")
        ax.set_xlabel("GPT-3 size (one d x d rank-4 LoRA per layer)")
        ax.set_ylabel("forward ms per LoRA (1 CPU thread)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(results_dir / "e3_timing.png", dpi=110)
        plt.close(fig)
        made.append("e3_timing.png")
    for zoo, task in sorted({(r["zoo"], r["task"]) for r in e2}):
        key, label = HEADLINE[task]
        fig, ax = plt.subplots(figsize=(6, 4))
        rows = sorted(
            (r for r in e2 if r["zoo"] == zoo and r["task"] == task),
            key=lambda r: MODELS.index(r["model"]),
        )
        for r in rows:
            ranks = sorted(int(k) for k in r["summary"])
            ax.errorbar(
                ranks,
                [r["summary"][str(k)][key]["mean"] for k in ranks],
                yerr=[r["summary"][str(k)][key]["std"] for k in ranks],
                marker="o",
                label=r["model"],
                capsize=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("test rank (trained on rank 4)")
        ax.set_ylabel(label)
        sizes = rows[0].get("test_sizes")
        n_text = (
            f"\ntest LoRAs per rank: {' / '.join(str(n) for n in sizes.values())}" if sizes else ""
        )
        ax.set_title(f"{zoo}: {task}{n_text}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = f"e2_{zoo}_{task}.png"
        fig.savefig(results_dir / name, dpi=110)
        plt.close(fig)
        made.append(name)
    return made


def outdated_lines(outdated: list[str]) -> list[str]:
    """A warning naming results written before the zoo, spec or code they depend on changed."""
    if not outdated:
        return []
    return ["**Outdated results** (the experiment spec, the zoo's labels or splits, or the code changed "
            "since they were written; `loravet bench` reruns exactly these): "
            + ", ".join(f"`{p}`" for p in sorted(outdated)) + ".", ""]  # fmt: skip


def unchecked_lines(unchecked: dict[str, int]) -> list[str]:
    """A warning naming the zoos not built where the summary was written: their results are shown
    as written, unchecked against the zoo's current manifest and splits."""
    if not unchecked:
        return []
    zoos = ", ".join(
        f"{z} ({n} result(s); `make zoo-{z}` builds it)" for z, n in sorted(unchecked.items())
    )
    return [f"**Not checked against their zoo**: these zoos were not built where this summary was written, "
            f"so their results are shown as written and could not be checked for being outdated: {zoos}.", ""]  # fmt: skip


def carried_over_lines(results: list[dict[str, Any]]) -> list[str]:
    """A note naming how many results were carried over a refactor, and how that was checked."""
    moved = [r for r in results if r.get("rekeyed")]
    if not moved:
        return []
    return [f"{len(moved)} result(s) were carried over a change of code that, checked by rerunning one seed per "
            "model and zoo (`loravet bench --verify-refactor`, benchmarks/refactor_check.py), changed no number; "
            "each says how in its `rekeyed` field.", ""]  # fmt: skip


def token_scan_tables(results: list[dict[str, Any]]) -> list[str]:
    """``benchmarks/token_scan.py``: the shipped families alone and combined (val beside test), and
    the same combination trained without the held-out triggers (E7's splits)."""
    if not results:
        return ["_no results yet_"]
    names = {"gl_net": "GL-net seeds", "token_scan": "token scan", "shipped": "both (shipped)",
             "combined": "both"}  # fmt: skip

    def pair(d: dict[str, Any]) -> str:
        return f"{d['auroc']:.3f} / {d['tpr_at_1pct_fpr']:.3f}"

    lines = ["Standard splits (AUROC / TPR at 1% FPR):", "",
             "| zoo | scorer | val | test | val / test LoRAs |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(results, key=lambda r: r["zoo"]):
        st = r["standard"]
        for f in ("gl_net", "token_scan", "shipped"):
            lines.append(
                f"| {r['zoo']} | {names[f]} | {pair(st['val'][f])} | {pair(st['test'][f])} "
                f"| {st['val'][f]['n']} / {st['test'][f]['n']} |"
            )
    for r in sorted(results, key=lambda r: r["zoo"]):
        if ev := r.get("evidence"):
            lines += ["", f"{r['zoo']}, the evidence a report shows (the scan's top tokens, only where its score is above "
                      f"99% of the clean finetunes it was fitted on), test split: for {ev['shown_clean']} of {ev['clean']} "
                      f"clean and {ev['shown_harmful']} of {ev['harmful']} harmful LoRAs; the first token is one of the "
                      f"LoRA's trigger's tokens for {ev['first_token_is_trigger']} of those {ev['shown_harmful']}."]  # fmt: skip
    lines += ["", "Held-out triggers (E7's splits; trained and validated without them; AUROC / TPR at 1% FPR):", "",
              "| zoo | held-out triggers | scorer | seen (test) | unseen | gap (AUROC) |",
              "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(results, key=lambda r: r["zoo"]):
        ho = r["held_out"]
        for f in ("gl_net", "token_scan", "combined"):
            lines.append(
                f"| {r['zoo']} | {', '.join(ho['held_out_triggers'])} | {names[f]} "
                f"| {pair(ho[f]['test_seen'])} | {pair(ho[f]['test_unseen'])} | {ho[f]['gap']:+.3f} |"
            )
    return lines


def write_summary(
    results_dir: Path, outdated: list[str] | None = None, unchecked: dict[str, int] | None = None
) -> Path:
    e1, e2, e5 = _load(results_dir / "e1"), _load(results_dir / "e2"), _load(results_dir / "e5")
    e3_list, e4 = _load(results_dir / "e3"), _load(results_dir / "e4")
    e3 = next((r for r in e3_list if "machine" not in r), None)  # the timing table
    roofline = next((r for r in e3_list if "machine" in r), None)
    e6 = _load_e6(results_dir / "e6")
    e7 = _load(results_dir / "e7")
    plots = (
        _plots(results_dir, e2, e3)
        + roofline_plot(results_dir, roofline)
        + _e6_plots(results_dir, e6)
    )
    shas = sorted(
        {
            (r.get("provenance") or {}).get("git_sha") or "?"
            for r in [*e1, *e2, *e3_list, *e4, *e5, *e6]
        }
    )
    lines = ["# Benchmark summary", "", "Regenerated by `loravet bench --summary-only` from the JSON results beside this file; "
             "each result records its git sha, package versions and machine.", f"Results from commits: {', '.join(s[:10] for s in shas) or 'none'}.", "",
             *outdated_lines(outdated or []),
             *unchecked_lines(unchecked or {}),
             *carried_over_lines([*e1, *e2, *e5, *e7]),
             "## E1: models x tasks x zoos (test split, mean ± std over 3 seeds)", "", *e1_table(e1), "",
             "### E1 against the goals", "", *goals_table(e1), "",
             "## E2: rank generalisation", "", *e2_table(e2), "",
             "## E3: time per LoRA across GPT-3 sizes", "", *e3_table(e3), "",
             "### E3 roofline: GL-net against this machine's limit", "", *roofline_table(roofline), "",
             "## E4: speed-up against standard evaluation", "", *e4_table(e4), "",
             "### E4, the service side: the worker's batches", "", *e4_worker_table(_load(results_dir / "e4_worker")), "",
             "## E5 (beyond the paper): quality read through the task", "",
             "A model learns the membership labels from the weights; a ridge map from the train split's true labels to quality "
             "(chosen on val) turns its predictions into quality. Test split, 3 seeds.", "", *e5_table(e5, e1), "",
             "## E6 (beyond the paper): verdicts end to end", "",
             "`loravet vet` semantics (static checks, shipped predictors, thresholds) over each zoo's whole test split; "
             "goal: at least 97% of clean finetunes accepted and 95% of harmful ones rejected.", "", *e6_table(e6), "",
             *e6_calibration_table(e6), "",
             "## E7 (beyond the paper): held-out attacks", "",
             "Harmful detection trained with no LoRA poisoned by the held-out triggers, scored on the same clean test "
             "LoRAs against backdoors with seen and with unseen triggers (3 seeds); goal: a gap within 0.02.", "",
             *e7_table(e7), "",
             "## Ensembles over architectures (harmful detection, beyond E1)", "",
             "The shipped GL-net seed ensemble combined with MLP+Dense and O(r)-aligned MLP seeds (each family's mean logit "
             "standardised on validation, weighted sum; `python -m benchmarks.architecture_ensemble ZOO`). Validation "
             "chooses, test reads; not part of `loravet bench` (the MLP members are trained by the script).", "",
             *ensemble_table(_load(results_dir / "architecture_ensemble")), "",
             "## Token scan beside GL-net (harmful detection, beyond E1)", "",
             "The base model's token embeddings through each layer-0 delta, every token's response standardised against "
             "clean finetunes (`models/token_scan.py`), summed with the GL-net seeds' validation-standardised logit "
             "(`python -m benchmarks.token_scan ZOO`; not part of `loravet bench`: the scan is fitted on clean LoRAs only).", "",
             *token_scan_tables(_load(results_dir / "token_scan")), ""]  # fmt: skip
    lines += [f"![{p}]({p})" for p in plots]
    out = results_dir / "SUMMARY.md"
    out.write_text("\n".join(lines) + "\n")
    return out
