"""Harmful detection by an ensemble over architectures, against GL-net's ensemble over seeds.

    python -m benchmarks.architecture_ensemble zoos/minilm-topics --runs .tmp/arch-ensemble
        -> benchmarks/results/architecture_ensemble/minilm-topics.json

Why: issue 16 asks whether ensembles over seeds *and architectures* move harmful detection toward a
hub's bar. On minilm-topics GL-net, MLP+Dense and the O(r)-aligned MLP tie on test AUROC (E1:
0.91-0.92), which says nothing about whether their errors coincide. Members: three GL-net seeds
(the shipped harmful ensemble's, or trained here where a single model ships) and three seeds each
of MLP+Dense and the O(r)-aligned MLP, trained here with the E1 settings (``loravet train
--settings benchmarks/experiments/e1_models_tasks.json``; resumable: a member whose checkpoint is
complete is kept). Each family's mean logit is standardised with its validation mean and std, and
families are combined by a weighted sum of those scores.
Every combination's validation and test metrics are recorded; a choice between them is made on
validation alone. One thread per process; about 25 CPU-minutes on minilm-topics, 10 on digits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.cli_support import fail
from core.provenance import provenance
from loravet import SHIPPED_PREDICTORS
from models.gl_net_ensemble import GLNetEnsemble
from models.predictor import load_predictor
from training.metrics import auroc, tpr_at_fpr
from training.zoo_dataset import Zoo, load_task
from zoo.zoo_manifest import zoo_digests

RESULTS = Path(__file__).resolve().parent / "results" / "architecture_ensemble"
SETTINGS = Path(__file__).resolve().parent / "experiments" / "e1_models_tasks.json"
TRAINED = ("gl_net", "mlp_dense", "mlp_oalign")
"""GL-net seeds are trained only where the shipped harmful predictor is not already a seed ensemble."""
SEEDS = (0, 1, 2)
COMBINATIONS: dict[str, dict[str, float]] = {
    "gl_net x3": {"gl_net": 1.0},
    "gl_net seed 0": {"gl_net_s0": 1.0},
    "mlp_dense x3": {"mlp_dense": 1.0},
    "mlp_oalign x3": {"mlp_oalign": 1.0},
    "gl_net + mlp_dense": {"gl_net": 1.0, "mlp_dense": 1.0},
    "gl_net + 0.5 mlp_dense": {"gl_net": 1.0, "mlp_dense": 0.5},
    "gl_net seed 0 + mlp_dense": {"gl_net_s0": 1.0, "mlp_dense": 1.0},
    "gl_net + mlp_oalign": {"gl_net": 1.0, "mlp_oalign": 1.0},
    "gl_net + mlp_dense + mlp_oalign": {"gl_net": 1.0, "mlp_dense": 1.0, "mlp_oalign": 1.0},
}
"""Family -> weight on its validation-standardised mean logit (``gl_net_s0``: GL-net's first seed
alone, what fits a data budget that has no room for three GL-net checkpoints)."""


def standardised_sum(
    family_logits: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    weights: dict[str, float],
) -> np.ndarray:
    """``sum_f w_f (mean_f - mu_f) / sd_f``: ``family_logits[f]`` is (members, N); mu and sd of the
    family's mean logit come from ``reference`` (the validation split), never from the scored split.
    Why standardise: the families' logits live on different scales (a GL-net's spread is several
    times an MLP's), and a plain mean would let one family decide alone."""
    total = np.zeros(next(iter(family_logits.values())).shape[1])
    for family, w in weights.items():
        ref = reference[family].mean(axis=0)
        total += w * (family_logits[family].mean(axis=0) - ref.mean()) / ref.std()
    return total


def train_members(zoo_dir: Path, runs: Path, models: tuple[str, ...]) -> dict[str, list[Path]]:
    """Train (or keep) the members, one process and one thread each, in turn."""
    members: dict[str, list[Path]] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for model in models:
        for seed in SEEDS:
            out = runs / f"{model}-s{seed}"
            if not (out / "meta.json").is_file():
                print(f"training {model} seed {seed} -> {out}", flush=True)
                cmd = [sys.executable, "-m", "loravet.cli", "train", "--zoo", str(zoo_dir)]
                cmd += ["--task", "harmful", "--model", model, "--seed", str(seed)]
                cmd += ["--settings", str(SETTINGS), "--out", str(out)]
                with (runs / f"{model}-s{seed}.log").open("w") as log:
                    subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
            members.setdefault(model, []).append(out)
    return members


@torch.inference_mode()
def family_logits(
    zoo: Zoo, split: str, members: dict[str, list[Path]]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The split's harmful labels and each family's raw logits, (members, N)."""
    data = load_task(zoo, split, "harmful")
    out = {}
    shipped = shipped_seed_ensemble(zoo)
    if shipped is not None:
        out["gl_net"] = np.array([m(data.batch)[:, 0].double().numpy() for m in shipped.members])
    for family, dirs in members.items():
        models = [load_predictor(d).model for d in dirs]
        out[family] = np.array([m(data.batch)[:, 0].double().numpy() for m in models])
    out["gl_net_s0"] = out["gl_net"][:1]
    return data.y[:, 0], out


def shipped_seed_ensemble(zoo: Zoo) -> GLNetEnsemble | None:
    """The shipped harmful GL-net seed ensemble of this zoo, where that is what ships."""
    shipped = load_predictor(SHIPPED_PREDICTORS / f"{zoo.root.name}-harmful-gl_net")
    return shipped.model if isinstance(shipped.model, GLNetEnsemble) else None


def run(zoo_dir: Path, runs: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    runs.mkdir(parents=True, exist_ok=True)
    zoo = Zoo.open(zoo_dir)
    trained = TRAINED if shipped_seed_ensemble(zoo) is None else TRAINED[1:]
    members = train_members(zoo_dir, runs, trained)
    y_val, val = family_logits(zoo, "val", members)
    y_test, test = family_logits(zoo, "test", members)
    rows = []
    for name, weights in COMBINATIONS.items():
        row: dict[str, Any] = {"combination": name, "weights": weights}
        for split, y, logits in (("val", y_val, val), ("test", y_test, test)):
            score = standardised_sum(logits, val, weights)
            row[split] = {"auroc": auroc(y, score), "tpr_at_1pct_fpr": tpr_at_fpr(y, score, 0.01)}
        rows.append(row)
    return {
        "zoo": zoo_dir.name,
        "task": "harmful",
        "members": {
            "gl_net": "trained here" if "gl_net" in trained else "shipped ensemble, seeds 0-2",
            **{m: [str(p) for p in d] for m, d in members.items()},
        },
        "n_val": len(y_val),
        "n_test": len(y_test),
        "rows": rows,
        "note": "families combined by a weighted sum of validation-standardised mean logits; "
        "choose on val, read test; TPR at 1% FPR is the TPR at 0 false positives below 100 clean LoRAs",
        "provenance": provenance(zoo_digests(zoo_dir)),
    }


def main(argv: list[str]) -> int:
    if len(argv) < 1 or argv[0].startswith("-"):
        return fail("usage: python -m benchmarks.architecture_ensemble ZOO_DIR [--runs DIR]")
    zoo_dir = Path(argv[0])
    runs = Path(argv[argv.index("--runs") + 1]) if "--runs" in argv else Path(".tmp/arch-ensemble")
    result = run(zoo_dir, runs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{zoo_dir.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["rows"]:
        v, t = row["val"], row["test"]
        print(
            f"{row['combination']:34s} val AUROC {v['auroc']:.3f} TPR {v['tpr_at_1pct_fpr']:.3f}"
            f" | test AUROC {t['auroc']:.3f} TPR {t['tpr_at_1pct_fpr']:.3f}"
        )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
