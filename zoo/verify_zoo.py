"""Check a zoo: file integrity for every LoRA, then rebuild a random sample from recorded seeds.

Why: labels are only worth training on if they can be reproduced. A verify run re-derives K LoRAs
from (recipe, index) in a temporary directory, on a freshly built base model, and compares:

- exactly: the sampled and resolved hyperparameters, the seed, membership, n_train, rank, the
  design flag ``poisoned`` and the eval set sizes, plus the base model and data digests;
- within ``tolerance`` (default 0.02): ``quality``, ``base_quality``, ``attack_success_rate``,
  ``base_attack_success_rate`` (float reductions may differ across CPUs and library builds);
- ``harmful``: exactly, unless the ASR is within the tolerance of the 0.5 threshold.

Bitwise-identical adapters (same sha256) are reported but not required.

    loravet zoo verify zoos/digits --sample 20
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.provenance import file_sha256
from zoo.build_zoo import finetune_row, quiet_libraries
from zoo.recipe_base import Recipe
from zoo.recipes import make_recipe
from zoo.zoo_manifest import MANIFEST_FILE, read_manifest

TOLERANCE = 0.02
APPROX_LABELS = ("quality", "base_quality", "attack_success_rate", "base_attack_success_rate")
EXACT_LABELS = ("poisoned", "n_train", "rank", "n_eval_clean", "n_eval_triggered")
IGNORED_PROVENANCE = ("versions",)


class ZooVerifyError(ValueError):
    """The directory is not a zoo (no manifest): reported as ``error: ...``."""


def check_integrity(zoo_dir: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Problems with the stored files: missing adapters/configs or sha256 mismatches."""
    problems = []
    for row in rows:
        path = zoo_dir / row["file"]
        if not path.is_file() or not (zoo_dir / row["config_file"]).is_file():
            problems.append(f"{row['id']}: adapter or config file missing")
        elif file_sha256(path) != row["sha256"]:
            problems.append(f"{row['id']}: sha256 of {row['file']} does not match the manifest")
    return problems


def compare_rows(
    old: dict[str, Any], new: dict[str, Any], tolerance: float, min_asr: float
) -> list[str]:
    """Differences between a recorded and a rebuilt manifest row that exceed what is allowed."""
    diffs = []
    if old["seed"] != new["seed"]:
        diffs.append(f"seed {old['seed']} != {new['seed']}")
    for key in sorted(set(old["hyperparameters"]) | set(new["hyperparameters"])):
        a, b = old["hyperparameters"].get(key), new["hyperparameters"].get(key)
        if a != b:
            diffs.append(f"hyperparameter {key}: {a!r} != {b!r}")
    lo, ln = old["labels"], new["labels"]
    membership = old["membership_key"]
    for key in (*EXACT_LABELS, membership):
        if lo.get(key) != ln.get(key):
            diffs.append(f"label {key}: {lo.get(key)!r} != {ln.get(key)!r}")
    for key in APPROX_LABELS:
        if abs(float(lo[key]) - float(ln[key])) > tolerance:
            diffs.append(f"label {key}: {lo[key]:.4f} vs {ln[key]:.4f} (tolerance {tolerance})")
    near_threshold = abs(float(lo["attack_success_rate"]) - min_asr) <= tolerance
    if lo["harmful"] != ln["harmful"] and not near_threshold:
        diffs.append(f"label harmful: {lo['harmful']!r} != {ln['harmful']!r}")
    for key, value in old["provenance"].items():
        if key not in IGNORED_PROVENANCE and new["provenance"].get(key) != value:
            diffs.append(f"provenance {key}: {value!r} != {new['provenance'].get(key)!r}")
    return diffs


def rebuilt(
    recipe: Recipe, rows: list[dict[str, Any]], positions: list[int]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(recorded, rebuilt) manifest rows for ``rows[positions]``, each rebuilt from its index.

    Why a generator: the base model is built once in a temporary directory that lives exactly as
    long as the rebuilds (a rebuild needs nothing else), and callers report each LoRA as it lands."""
    with tempfile.TemporaryDirectory(prefix="loravet-rebuild-") as tmp:
        work = Path(tmp)
        recipe.prepare(work)
        recipe.load(work)
        for position in positions:
            old = rows[position]
            out_dir = work / old["id"]
            out_dir.mkdir()
            yield old, finetune_row(recipe, int(old["index"]), out_dir)


def verify_zoo(
    zoo_dir: Path,
    sample: int,
    seed: int = 0,
    tolerance: float = TOLERANCE,
    say: Callable[[str], None] = print,
) -> bool:
    """Verify ``zoo_dir``; print a readable report through ``say``; return True when all is well.

    Raises:
        ZooVerifyError: ``zoo_dir`` is missing or holds no manifest.
    """
    if not zoo_dir.is_dir():
        raise ZooVerifyError(f"zoo directory {zoo_dir} does not exist")
    if not (zoo_dir / MANIFEST_FILE).is_file():
        raise ZooVerifyError(
            f"{zoo_dir} is not a zoo: {MANIFEST_FILE} is missing (build it with `loravet zoo build`)"
        )
    rows = read_manifest(zoo_dir)
    if not rows:
        raise ZooVerifyError(f"{zoo_dir / MANIFEST_FILE} lists no LoRAs")
    ok = True
    problems = check_integrity(zoo_dir, rows)
    say(f"integrity: {len(rows) - len(problems)}/{len(rows)} adapters present with matching sha256")
    for problem in problems:
        say(f"  FAIL {problem}")
        ok = False
    recipes = {r["recipe"] for r in rows}
    scales = {r["hyperparameters"]["steps_scale"] for r in rows}
    if len(recipes) != 1 or len(scales) != 1:
        say(f"FAIL the manifest mixes recipes {sorted(recipes)} or step scales {sorted(scales)}")
        return False
    quiet_libraries()
    bases = {r["provenance"].get("base_source") for r in rows}
    if len(bases) != 1:
        say(f"FAIL the manifest mixes bases {sorted(map(str, bases))}")
        return False
    recipe = make_recipe(recipes.pop(), scales.pop(), bases.pop())
    min_asr = float(recipe.spec.backdoor["harmful_min_asr"])
    rng = np.random.default_rng(seed)
    chosen = sorted(
        int(i) for i in rng.choice(len(rows), size=min(sample, len(rows)), replace=False)
    )
    identical = 0
    for old, new in rebuilt(recipe, rows, chosen):
        diffs = compare_rows(old, new, tolerance, min_asr)
        same_bits = new["sha256"] == old["sha256"]
        identical += same_bits
        lo, ln = old["labels"], new["labels"]
        detail = (
            f"quality {lo['quality']:.3f}->{ln['quality']:.3f} "
            f"asr {lo['attack_success_rate']:.3f}->{ln['attack_success_rate']:.3f}"
            f"{' bitwise-identical' if same_bits else ''}"
        )
        say(f"{'ok  ' if not diffs else 'FAIL'} {old['id']} {detail}")
        for diff in diffs:
            say(f"     {diff}")
        ok = ok and not diffs
    verdict = "PASS" if ok else "FAIL"
    say(
        f"verify {verdict}: {len(chosen)} LoRAs rebuilt ({identical} bitwise identical), "
        f"label tolerance {tolerance}, {len(problems)} integrity problems"
    )
    return ok
