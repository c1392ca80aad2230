"""E7 (beyond the paper): held-out attacks. Does harmful detection find triggers it never saw?

Why: a hub's attackers pick their own triggers. A detector that learned "LoRAs trained with the
phrase `zx`" would fail on the next phrase. Here a zoo's harmful finetunes are split by trigger:
every LoRA poisoned with a held-out trigger is removed from training and validation (wherever its
split), clean LoRAs stay as they are. The model is then scored twice on the test split's clean
LoRAs: against the test split's backdoors with seen triggers, and against every backdoor with a
held-out trigger (all splits: none of them was trained on). Goal: AUROC on unseen triggers within
0.02 of seen ones.

A trigger is what the recipe inserted: the word or phrase (minilm-topics, causal-lm) or the pixel
patch as ``corner/size`` (digits). Clean LoRAs carry a drawn but unused trigger; it plays no part.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.model_runs import _config, summarise
from training.train_loop import fit, predict_raw, task_metrics, to_user_units
from training.zoo_dataset import Task, Zoo, load_task
from zoo.zoo_manifest import ZooRow


def trigger_of(row: ZooRow) -> str:
    hp = row.hyperparameters
    if "trigger" in hp:
        return str(hp["trigger"])
    return f"{hp['corner']}/{hp['patch_size']}"


def poisoned(row: ZooRow) -> bool:
    return row.poisoned


def held_out_splits(zoo: Zoo, held: set[str]) -> dict[str, list[str]]:
    """The E7 splits, by id: train, val, test on seen triggers, test on unseen ones."""

    def unseen(i: str) -> bool:
        return poisoned(zoo.rows[i]) and trigger_of(zoo.rows[i]) in held

    test = zoo.ids("test")
    clean_test = [i for i in test if not poisoned(zoo.rows[i])]
    return {
        "e7/train": [i for i in zoo.ids("train") if not unseen(i)],
        "e7/val": [i for i in zoo.ids("val") if not unseen(i)],
        "e7/test_seen": [i for i in test if not unseen(i)],
        "e7/test_unseen": clean_test + [i for i in zoo.ids("all") if unseen(i)],
    }


def run_e7_cell(zoo_dir: str, task: Task, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    torch.set_num_threads(1)
    zoo = Zoo.open(zoo_dir)
    held = set(spec["held_out_triggers"][zoo.root.name])
    seen = {trigger_of(r) for r in zoo.rows.values() if poisoned(r)}
    missing = held - seen
    if missing:
        raise ValueError(f"held-out triggers {sorted(missing)} never occur in {zoo_dir}")
    zoo.splits.update(held_out_splits(zoo, held))
    train = load_task(zoo, "e7/train", task)
    val = load_task(zoo, "e7/val", task, spec=train.batch.spec)
    tests = {
        name: load_task(zoo, f"e7/test_{name}", task, spec=train.batch.spec)
        for name in ("seen", "unseen")
    }
    per_seed = []
    for seed in spec["seeds"]:
        result = fit(_config(task, model, seed, spec), train, val)
        scores = {}
        for name, data in tests.items():
            pred = to_user_units(
                task, predict_raw(result.model, data.batch), result.target_mean, result.target_std
            )
            scores[name] = task_metrics(task, data.y, pred, result.threshold)
        per_seed.append(scores)
    summary = {name: summarise([s[name] for s in per_seed]) for name in tests}
    gap = [s["seen"]["auroc"] - s["unseen"]["auroc"] for s in per_seed]
    return {
        "held_out_triggers": sorted(held),
        "n_train": len(train),
        "test_sizes": {name: {"n": len(d), "harmful": int(d.y.sum())} for name, d in tests.items()},
        "per_seed": per_seed,
        "summary": summary,
        "auroc_gap": {"mean": sum(gap) / len(gap), "per_seed": gap},
    }
