"""E6 (beyond the paper): the verdict a hub would see, over a zoo's whole test split, and false alarms.

Why: the verdict is the product. E1 scores predictors one task at a time; a hub sees ``accept``,
``review`` or ``reject`` from everything together (static checks, every predictor, thresholds). This
runs exactly what ``loravet vet`` and the worker run (:func:`workers.vetting_pipeline.vet_batch`)
with the shipped predictors on every test-split LoRA of a zoo and counts, for clean finetunes, how
many were accepted, sent to review or rejected, and for harmful ones, how many were rejected,
reviewed or let through; with the reasons behind each non-accept.

It also measures every warn-level static check's false-alarm rate: the share of the zoo's clean
finetunes (all splits: checks learn nothing) on which it warns. A check that warns on more than 1%
of clean finetunes costs a hub more reviews than it is worth.

    python -m benchmarks.e6_verdicts zoos/minilm-topics        # prints the tables
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lora_io import load_adapter, run_checks
from loravet import SHIPPED_PREDICTORS
from training.zoo_dataset import Zoo, adapter_paths

BATCH = 64
STATUSES = ("clean", "harmful", "backdoor_failed")
VERDICTS = ("accept", "review", "reject")


def verdict_table(zoo_dir: str, registry: Any) -> dict[str, Any]:
    """Counts of verdicts per harmful status on the test split, and per-LoRA outcomes."""
    from workers.vetting_pipeline import VetInput, vet_batch

    zoo = Zoo.open(zoo_dir)
    ids = zoo.ids("test")
    outcomes: list[dict[str, Any]] = []
    for start in range(0, len(ids), BATCH):
        part = ids[start : start + BATCH]
        items = []
        for lora_id in part:
            file, config = adapter_paths(zoo, zoo.rows[lora_id])
            items.append(
                VetInput(file.read_bytes(), config.read_bytes() if config is not None else None)
            )
        for lora_id, report in zip(part, vet_batch(items, registry), strict=True):
            if isinstance(report, Exception):
                raise RuntimeError(f"{lora_id}: {report}") from report
            harmful = [p for p in report.predictions if p.task == "harmful"]
            outcomes.append(
                {
                    "id": lora_id,
                    "status": zoo.rows[lora_id].harmful_status,
                    "verdict": report.verdict,
                    "reasons": sorted({r.code for r in report.reasons}),
                    "harmful_probability": harmful[0].value if harmful else None,
                }
            )
    counts = {
        s: {v: sum(1 for o in outcomes if o["status"] == s and o["verdict"] == v) for v in VERDICTS}
        for s in STATUSES
    }
    reasons = {
        s: dict(
            Counter(
                code for o in outcomes if o["status"] == s for code in o["reasons"]
            ).most_common()
        )
        for s in STATUSES
    }
    return {"counts": counts, "reasons": reasons, "outcomes": outcomes}


def check_false_alarms(zoo_dir: str) -> dict[str, Any]:
    """Per check: how many of the zoo's clean finetunes it warns or fails on (every split)."""
    zoo = Zoo.open(zoo_dir)
    clean = [i for i in zoo.ids("all") if zoo.rows[i].harmful_status == "clean"]
    warned: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    examples: dict[str, str] = {}
    names: set[str] = set()
    for lora_id in clean:
        file, config = adapter_paths(zoo, zoo.rows[lora_id])
        for check in run_checks(load_adapter(file, config=config)):
            names.add(check.name)
            if check.status == "warn":
                warned[check.name] += 1
                examples.setdefault(check.name, f"{lora_id}: {check.detail}")
            elif check.status == "fail":
                failed[check.name] += 1
    return {
        "clean_loras": len(clean),
        "checks": {
            name: {
                "warn": warned[name],
                "fail": failed[name],
                "warn_rate": round(warned[name] / len(clean), 4) if clean else None,
                "example": examples.get(name),
            }
            for name in sorted(names)
        },
    }


def calibration_on_test(zoo_dir: str, registry: Any) -> dict[str, Any]:
    """How the shipped predictors' read-out (fitted on val) holds on test: the harmful
    probability's ECE before and after calibration with its reliability bins, and the quality
    interval's coverage with the test R^2."""
    from models.calibration import expected_calibration_error, r2_score, sigmoid
    from training.calibrate_cli import raw_outputs

    zoo = Zoo.open(zoo_dir)
    first = zoo.rows[zoo.ids("test")[0]]
    file, config = adapter_paths(zoo, first)
    spec = load_adapter(file, config=config).spec
    out: dict[str, Any] = {}
    for predictor in registry.for_spec(spec):
        cal, task = predictor.config.calibration, predictor.config.task
        if task not in ("harmful", "quality"):
            continue
        raw, targets = raw_outputs(predictor, zoo, "test")
        entry: dict[str, Any] = {"predictor_id": predictor.config.predictor_id, "n": len(raw)}
        if task == "harmful":
            uncalibrated = sigmoid(raw)
            entry["ece_uncalibrated"], entry["bins_uncalibrated"] = expected_calibration_error(
                uncalibrated, targets
            )
            if cal is not None:
                entry["ece"], entry["bins"] = expected_calibration_error(
                    cal.probability(raw), targets
                )
        else:
            entry["r2"] = r2_score(raw, targets)
            if cal is not None and cal.half_width is not None:
                inside = np.abs(targets - raw) <= cal.half_width
                entry["coverage_target"] = cal.coverage
                entry["coverage"] = float(inside.mean())
                entry["half_width"] = cal.half_width
                entry["decides"] = cal.decides
        out[task] = entry
    return out


def run(zoo_dir: str, predictor_dir: Path = SHIPPED_PREDICTORS) -> dict[str, Any]:
    from workers.worker_runtime import load_registry

    registry, _ = load_registry(predictor_dir, "cpu")  # loaded once, used by both parts
    return {
        "verdicts": verdict_table(zoo_dir, registry),
        "check_false_alarms": check_false_alarms(zoo_dir),
        "calibration": calibration_on_test(zoo_dir, registry),
    }


def render(zoo_name: str, result: dict[str, Any]) -> str:
    counts = result["verdicts"]["counts"]
    lines = [
        f"{zoo_name}: test split verdicts",
        "| finetunes | n | accept | review | reject |",
        "| --- | --- | --- | --- | --- |",
    ]
    for status in STATUSES:
        row = counts[status]
        n = sum(row.values())
        if n:
            cells = [f"{row[v]} ({row[v] / n:.0%})" for v in VERDICTS]
            lines.append(f"| {status} | {n} | {' | '.join(cells)} |")
    alarms = result["check_false_alarms"]
    lines += [
        "",
        f"warn-level checks on the zoo's {alarms['clean_loras']} clean finetunes:",
        *[
            f"  {name}: warns on {c['warn']} ({c['warn_rate']:.1%})"
            for name, c in alarms["checks"].items()
        ],
    ]
    cal = result.get("calibration", {})
    if "harmful" in cal:
        h = cal["harmful"]
        lines.append(
            f"harmful probability ECE on test: {h['ece_uncalibrated']:.3f} uncalibrated, "
            f"{h.get('ece', float('nan')):.3f} calibrated ({h['n']} LoRAs)"
        )
    if "quality" in cal:
        q = cal["quality"]
        lines.append(
            f"quality on test: R^2 {q['r2']:.3f}; interval coverage {q.get('coverage', float('nan')):.1%} "
            f"(target {q.get('coverage_target') or float('nan'):.0%})"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from zoo.zoo_manifest import MANIFEST_FILE

    for arg in argv:
        if not (Path(arg) / MANIFEST_FILE).is_file():
            print(f"error: {arg} is not a zoo ({MANIFEST_FILE} missing)", file=sys.stderr)
            return 2
        print(render(Path(arg).name, run(arg)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
