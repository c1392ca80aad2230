"""The token scan beside GL-net: the shipped combination on the standard splits, and on held-out
triggers (E7's splits).

    python -m benchmarks.token_scan zoos/minilm-topics --runs var/token-scan
        -> benchmarks/results/token_scan/minilm-topics.json

Why: the scan (``models/token_scan.py``) learns nothing about triggers, only what clean finetunes'
first layers answer, so it should lose little on a trigger it never saw, where GL-net loses 0.09
AUROC on minilm-topics (E7). Two parts:

- standard splits: the shipped harmful predictor's two families (GL-net seeds, scan) alone and
  combined as shipped, on val and test, and per trigger on test;
- held-out triggers: E7's splits (every LoRA poisoned with a held-out trigger removed from train and
  val), GL-net seeds 0-2 trained there with E7's settings (one process, one thread; each seed's
  scores are kept under ``--runs``, so an interrupted run resumes), the scan fitted on that train
  split's clean LoRAs, each family standardised on that val split and summed as the shipped
  predictor sums them; AUROC on the test split's clean LoRAs against backdoors with seen and with
  unseen triggers.

Not part of ``loravet bench``: the scan is fitted on clean LoRAs only, which E1's generic training
loop does not do. About 10 CPU-minutes on minilm-topics.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench_cli import EXPERIMENTS, cell_settings, cell_spec_of, load_spec
from benchmarks.e7_held_out_triggers import held_out_splits, trigger_of
from benchmarks.model_runs import _config, clean_part
from core.cli_support import fail
from core.provenance import provenance
from loravet import SHIPPED_PREDICTORS
from models.family_ensemble import FamilyEnsemble
from models.model_catalog import build_model, fit_to_data
from models.predictor import load_predictor
from models.token_scan import TokenScan
from training.metrics import auroc, tpr_at_fpr
from training.train_loop import fit, predict_raw
from training.zoo_dataset import Zoo, load_task
from zoo.zoo_manifest import zoo_digests

RESULTS = Path(__file__).resolve().parent / "results" / "token_scan"
SEEDS = (0, 1, 2)


def scores(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return {"auroc": auroc(y, s), "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01), "n": len(y)}


def shipped_families(zoo: Zoo) -> tuple[FamilyEnsemble, dict[str, Any]]:
    """The shipped harmful family ensemble of this zoo and its token-scan member's hparams."""
    model = load_predictor(SHIPPED_PREDICTORS / f"{zoo.root.name}-harmful-gl_net").model
    if not isinstance(model, FamilyEnsemble) or "token_scan" not in model.config.families:
        raise ValueError(f"the shipped {zoo.root.name} harmful predictor has no token scan")
    (scan,) = [m["hparams"] for m in model.config.members if m["model"] == "token_scan"]
    return model, scan


@torch.inference_mode()
def standard_splits(zoo: Zoo, model: FamilyEnsemble) -> dict[str, Any]:
    out: dict[str, Any] = {}
    families = list(model.config.families)
    for split in ("val", "test"):
        data = load_task(zoo, split, "harmful", spec=model.spec)
        means = model.family_means(data.batch)[:, :, 0].double().numpy()  # (F, B)
        combined = model(data.batch)[:, 0].double().numpy()  # (B,)
        y = data.y[:, 0]
        row = {f: scores(y, means[k]) for k, f in enumerate(families)}
        row["shipped"] = scores(y, combined)
        out[split] = row
        if split == "test":
            triggers = np.array(
                [trigger_of(zoo.rows[i]) if y[k] else "" for k, i in enumerate(data.ids)]
            )
            out["test_by_trigger"] = {
                t: {
                    **{f: auroc(y[m], means[k][m]) for k, f in enumerate(families)},
                    "shipped": auroc(y[m], combined[m]),
                    "backdoors": int((triggers == t).sum()),
                }
                for t in sorted(set(triggers) - {""})
                for m in [(triggers == t) | (y == 0)]
            }
    return out


def evidence_on_test(zoo: Zoo, model: FamilyEnsemble) -> dict[str, Any]:
    """What a report's evidence would say on the test split: for how many clean and harmful LoRAs
    the scan shows any, and how often its first token is one of the LoRA's trigger's tokens."""
    from zoo.minilm_encoder import load_encoder

    tokenizer = load_encoder()[0]
    scan = next(m for m in model.members if isinstance(m, TokenScan))
    data = load_task(zoo, "test", "harmful", spec=model.spec)
    with torch.no_grad():
        rows = scan.top_probes(data.batch, 5)
    shown = {"clean": 0, "harmful": 0}
    first_is_trigger = 0
    for lora_id, y, row in zip(data.ids, data.y[:, 0], rows, strict=True):
        if not row:
            continue
        shown["harmful" if y else "clean"] += 1
        if y and scan.probe_label(row[0][1]) in tokenizer.tokenize(trigger_of(zoo.rows[lora_id])):
            first_is_trigger += 1
    return {
        "clean": int((data.y[:, 0] == 0).sum()),
        "harmful": int(data.y[:, 0].sum()),
        "shown_clean": shown["clean"],
        "shown_harmful": shown["harmful"],
        "first_token_is_trigger": first_is_trigger,
    }


def held_out(zoo: Zoo, scan_hparams: dict[str, Any], runs: Path) -> dict[str, Any]:
    spec = load_spec(EXPERIMENTS / "e7_held_out_triggers.json")
    name = zoo.root.name
    held = set(spec["held_out_triggers"][name])
    cell = cell_spec_of(
        spec, name, "gl_net", cell_settings(spec["models"]["gl_net"], name, "harmful")
    )
    zoo.splits.update(held_out_splits(zoo, held))
    train = load_task(zoo, "e7/train", "harmful")
    sets = {s: load_task(zoo, f"e7/{s}", "harmful", spec=train.batch.spec)
            for s in ("val", "test_seen", "test_unseen")}  # fmt: skip
    gl: dict[str, list[np.ndarray]] = {s: [] for s in sets}
    for seed in SEEDS:
        cache = runs / f"{name}-e7-gl_net-s{seed}.npz"
        if not cache.is_file():
            print(f"training GL-net seed {seed} on {name}'s e7/train", flush=True)
            result = fit(_config("harmful", "gl_net", seed, cell), train, sets["val"])
            raw = {
                s: predict_raw(result.model, d.batch)[:, 0].double().numpy()
                for s, d in sets.items()
            }
            np.savez(
                cache, val=raw["val"], test_seen=raw["test_seen"], test_unseen=raw["test_unseen"]
            )
        stored = np.load(cache)
        for s in sets:
            gl[s].append(stored[s])
    scan = build_model("token_scan", train.batch.spec, 1, **scan_hparams).eval()
    fit_to_data(scan, clean_part(train).batch)
    with torch.no_grad():
        scanned = {s: scan(d.batch)[:, 0].double().numpy() for s, d in sets.items()}
    family = {"gl_net": {s: np.mean(gl[s], axis=0) for s in sets}, "token_scan": scanned}
    center = {f: v["val"].mean() for f, v in family.items()}
    spread = {f: v["val"].std() for f, v in family.items()}
    family["combined"] = {
        s: sum((family[f][s] - center[f]) / spread[f] for f in ("gl_net", "token_scan"))
        for s in sets
    }
    out: dict[str, Any] = {"held_out_triggers": sorted(held), "n_train": len(train)}
    for f, by_split in family.items():
        row: dict[str, Any] = {s: scores(sets[s].y[:, 0], by_split[s]) for s in sets}
        row["gap"] = row["test_seen"]["auroc"] - row["test_unseen"]["auroc"]
        out[f] = row
    return out


def run(zoo_dir: Path, runs: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    runs.mkdir(parents=True, exist_ok=True)
    zoo = Zoo.open(zoo_dir)
    model, scan_hparams = shipped_families(zoo)
    standard = standard_splits(zoo, model)
    return {
        "zoo": zoo_dir.name,
        "task": "harmful",
        "scan": scan_hparams,
        "standard": standard,
        "evidence": evidence_on_test(zoo, model),
        "held_out": held_out(Zoo.open(zoo_dir), scan_hparams, runs),
        "note": "standard: the shipped predictor's families alone and combined, as shipped; held_out: "
        "E7's splits, GL-net seeds 0-2 (mean logit) trained there with E7's settings, the scan "
        "fitted on that train split's clean LoRAs, families standardised on that val split and "
        "summed; TPR at 1% FPR is the TPR at 0 false positives below 100 clean LoRAs",
        "provenance": provenance(zoo_digests(zoo_dir)),
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        return fail("usage: python -m benchmarks.token_scan ZOO_DIR [--runs DIR]")
    runs = Path(argv[argv.index("--runs") + 1]) if "--runs" in argv else Path("var/token-scan")
    try:
        result = run(Path(argv[0]), runs)
    except (ValueError, OSError) as exc:
        return fail(str(exc))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{result['zoo']}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
