"""How much of a zoo's quality its task alone explains: E5's ceiling, from the manifest, in seconds.

    python -m benchmarks.task_ceiling zoos/minilm-topics zoos/digits

The map E5 uses (``model_runs.task_to_quality``: ridge on the train split's true membership labels,
features and alpha chosen on val) applied to the true val and test labels. No weights are read, so
this says whether reading quality through the task is worth an E5 run on a zoo before paying for one.
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.model_runs import task_to_quality
from core.cli_support import fail
from training import metrics
from training.zoo_dataset import Zoo, ZooError, quality_label, target


def ceiling(zoo_dir: str) -> dict[str, float]:
    zoo = Zoo.open(zoo_dir)
    labels, quality = {}, {}
    for split in ("train", "val", "test"):
        rows = [zoo.rows[i] for i in zoo.ids(split)]
        labels[split] = np.array([target(r, "membership") for r in rows], dtype=np.float64)
        quality[split] = np.array([quality_label(r) for r in rows])
    features, alpha, predict = task_to_quality(
        labels["train"], quality["train"], labels["val"], quality["val"]
    )
    return {
        "val_r2": metrics.r2_score(quality["val"], predict(labels["val"])),
        "test_r2": metrics.r2_score(quality["test"], predict(labels["test"])),
        "pairs": float(features == "labels+pairs"),
        "alpha": alpha,
    }


def main(argv: list[str]) -> int:
    for zoo_dir in argv:
        try:
            c = ceiling(zoo_dir)
        except (ZooError, OSError) as exc:  # not a zoo, or no membership / quality labels
            return fail(f"{zoo_dir}: {exc}")
        print(f"{zoo_dir}: task -> quality ceiling: val R^2 {c['val_r2']:.3f}, test R^2 {c['test_r2']:.3f} "
              f"({'labels+pairs' if c['pairs'] else 'labels'}, alpha {c['alpha']:g})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
