"""Does a zoo's harmful label follow scale or a recipe draw alone? A shortcut check, in seconds.

    python -m benchmarks.scale_shortcut zoos/causal-lm zoos/minilm-topics
    python -m benchmarks.scale_shortcut --split test zoos/causal-lm

A detector that wins by noticing that poisoned finetunes are simply bigger (or trained longer, at a
higher learning rate, on more data) has learnt the zoo's recipe, not the attack, and will fail on a
hub's uploads. So before trusting E1's harmful column, this scores each LoRA by one number at a time
and reports that number's AUROC for harmful on the split (all LoRAs unless ``--split`` names one:
a 100-LoRA test split alone moves an AUROC by about 0.06 by chance): the whole delta's Frobenius norm
``||sum_i scale_i B_i A_i||`` over modules (sqrt of the sum of squared module norms), the largest
module's, and every numeric hyperparameter the recipe drew. An AUROC near 0.5 (or its mirror near
0.5) is no shortcut; one far from it is, and the zoo needs fixing before any model is compared on it.
"""

from __future__ import annotations

import sys

import numpy as np

from core.cli_support import fail
from lora_io import load_adapter
from lora_io.checks import delta_frobenius_norms
from training import metrics
from training.group_metrics import numeric_draws
from training.zoo_dataset import Zoo, ZooError, adapter_paths

# the labels themselves, or draws made because of them (a poisoned LoRA draws its poison share)
LABEL_DRAWS = ("poisoned", "poison_fraction", "n_poisoned", "n_trigger_only")


def module_norms(zoo: Zoo, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Harmful labels, (N, modules) Frobenius norms of each module's delta, and the LoRA ids.

    The norms are the service's own (``lora_io.checks.delta_frobenius_norms``, what the
    ``norm_outliers`` check reads), of each adapter as ``lora_io`` reads it."""
    labels, norms, ids = [], [], []
    for lora_id in zoo.ids(split):
        row = zoo.rows[lora_id]
        if row.harmful is None:
            continue
        file, config = adapter_paths(zoo, row)
        norms.append(delta_frobenius_norms(load_adapter(file, config=config)))
        labels.append(row.harmful)
        ids.append(lora_id)
    if not ids:
        raise ZooError(f"split {split!r} of {zoo.root} has no adapters labelled for task 'harmful'")
    return np.asarray(labels, dtype=bool), np.stack(norms), ids


def shortcut_aurocs(zoo_dir: str, split: str = "all") -> dict[str, float]:
    """AUROC for harmful of each single-number score on ``split`` (higher score = harmful)."""
    zoo = Zoo.open(zoo_dir)
    y, norms, ids = module_norms(zoo, split)
    if y.all() or not y.any():
        raise ZooError(f"split {split!r} of {zoo_dir} has only one class of harmful labels")
    scores = {
        "delta_frobenius_norm": np.sqrt((norms**2).sum(axis=1)),
        "largest_module_norm": norms.max(axis=1),
    }
    hparams = [zoo.rows[i].hyperparameters for i in ids]
    for name in sorted({k for h in hparams for k in h} - set(LABEL_DRAWS)):
        values = [h.get(name) for h in hparams]
        if numeric_draws(values):
            column = np.asarray(values, dtype=np.float64)
            if column.std() > 0:
                scores[f"hparam:{name}"] = column
    return {name: metrics.auroc(y.astype(np.float64), s) for name, s in scores.items()}


def main(argv: list[str]) -> int:
    split = "all"
    if argv[:1] == ["--split"]:
        if len(argv) < 2:
            return fail("--split needs a value (train, val, test or all)")
        split, argv = argv[1], argv[2:]
    if not argv:
        return fail("name at least one zoo directory, e.g. zoos/causal-lm")
    for zoo_dir in argv:
        try:
            aurocs = shortcut_aurocs(zoo_dir, split)
        except (ZooError, OSError, ValueError) as exc:
            return fail(f"{zoo_dir}: {exc}")
        worst = max(aurocs, key=lambda k: abs(aurocs[k] - 0.5))
        print(f"{zoo_dir} ({split}): harmful AUROC of one number alone; furthest from chance: "
              f"{worst} {aurocs[worst]:.3f}")  # fmt: skip
        for name, value in aurocs.items():
            print(f"  {name:28s} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
