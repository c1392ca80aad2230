"""What a zoo costs to build on a quiet machine, from a rebuilt sample. Minutes, not hours.

    python -m benchmarks.build_cost zoos/causal-lm --sample 15 --seed 7
        -> benchmarks/results/build_cost/causal-lm.json

Why: a zoo's manifest records each LoRA's CPU seconds as its build saw them, and builds run two
processes on two cores beside other work, so the record mixes the recipe's cost with the machine's
contention (shared caches and memory bandwidth inflate a process's own CPU time). Rebuilding a random
sample of recorded LoRAs, one thread, on an otherwise idle machine, and scaling the recorded total
by the quiet/recorded ratio of the same LoRAs estimates what the whole build costs without
rebuilding it; a bootstrap over the sample gives the ratio's 95% interval. Pause other work first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.cli_support import fail
from core.provenance import provenance
from zoo.build_zoo import quiet_libraries
from zoo.recipes import make_recipe
from zoo.verify_zoo import rebuilt
from zoo.zoo_manifest import read_manifest, zoo_digests

RESULTS = Path(__file__).resolve().parent / "results" / "build_cost"
BOOTSTRAP = 5000


def ratio_interval(recorded: np.ndarray, quiet: np.ndarray, seed: int) -> tuple[float, float]:
    """95% bootstrap interval of ``sum(quiet) / sum(recorded)`` over the sampled LoRAs."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(recorded), size=(BOOTSTRAP, len(recorded)))
    ratios = quiet[draws].sum(axis=1) / recorded[draws].sum(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def measure(zoo_dir: Path, sample: int, seed: int) -> dict[str, Any]:
    """Rebuild ``sample`` LoRAs with recorded CPU time; the estimate for the whole zoo."""
    torch.set_num_threads(1)  # as the build's own processes run
    rows = read_manifest(zoo_dir)
    timed = [k for k, r in enumerate(rows) if "cpu_seconds" in r.get("timings", {})]
    if not timed:
        raise ValueError(f"{zoo_dir}: no LoRA in its manifest records cpu_seconds")
    quiet_libraries()
    first = rows[0]
    recipe = make_recipe(
        first["recipe"],
        first["hyperparameters"]["steps_scale"],
        first["provenance"].get("base_source"),
    )
    chosen = sorted(
        int(k)
        for k in np.random.default_rng(seed).choice(timed, min(sample, len(timed)), replace=False)
    )
    per_lora = []
    for old, new in rebuilt(recipe, rows, chosen):
        same_labels = all(
            new["labels"][k] == old["labels"][k] for k in ("quality", "attack_success_rate")
        )
        per_lora.append(
            {
                "id": old["id"],
                "recorded_cpu_seconds": old["timings"]["cpu_seconds"],
                "quiet_cpu_seconds": new["timings"]["cpu_seconds"],
                "labels_equal": same_labels,
            }
        )
        print(json.dumps(per_lora[-1]), flush=True)
    recorded = np.array([p["recorded_cpu_seconds"] for p in per_lora])
    quiet = np.array([p["quiet_cpu_seconds"] for p in per_lora])
    ratio = float(quiet.sum() / recorded.sum())
    low, high = ratio_interval(recorded, quiet, seed)
    recorded_mean = float(np.mean([rows[k]["timings"]["cpu_seconds"] for k in timed]))
    hours = [recorded_mean * r * len(rows) / 3600 for r in (ratio, low, high)]
    return {
        "zoo": zoo_dir.name,
        "loras_in_zoo": len(rows),
        "loras_recording_cpu": len(timed),
        "recorded_cpu_seconds_mean": round(recorded_mean, 2),
        "sample": len(per_lora),
        "seed": seed,
        "quiet_over_recorded": round(ratio, 3),
        "ratio_95": [round(low, 3), round(high, 3)],
        "quiet_cpu_seconds_per_lora": round(recorded_mean * ratio, 2),
        "quiet_cpu_hours_whole_zoo": round(hours[0], 2),
        "quiet_cpu_hours_95": [round(hours[1], 2), round(hours[2], 2)],
        "per_lora": per_lora,
        "provenance": provenance(zoo_digests(zoo_dir)),
    }


def main(argv: list[str]) -> int:
    args, options = [a for a in argv if not a.startswith("--")], {}
    flags = [a for a in argv if a.startswith("--")]
    for flag in flags:
        name = flag.lstrip("-")
        if name not in ("sample", "seed"):
            return fail(f"unknown option {flag}; accepted: --sample N, --seed S")
        index = argv.index(flag)
        if index + 1 >= len(argv) or not argv[index + 1].isdigit():
            return fail(f"{flag} needs a whole number")
        options[name] = int(argv[index + 1])
        args.remove(argv[index + 1])
    if len(args) != 1:
        return fail("name one zoo directory, e.g. zoos/causal-lm")
    zoo_dir = Path(args[0])
    if not (zoo_dir / "manifest.jsonl").is_file():
        return fail(f"{zoo_dir} is not a built zoo (no manifest.jsonl)")
    try:
        result = measure(zoo_dir, options.get("sample", 15), options.get("seed", 7))
    except ValueError as exc:
        return fail(str(exc))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{zoo_dir.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{zoo_dir.name}: quiet/recorded CPU {result['quiet_over_recorded']} "
        f"(95% {result['ratio_95']}); whole zoo about {result['quiet_cpu_hours_whole_zoo']} "
        f"CPU-hours on a quiet core (95% {result['quiet_cpu_hours_95']}); written to {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
