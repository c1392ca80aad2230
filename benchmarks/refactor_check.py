"""``loravet bench --verify-refactor``: after a change that should not change any number (a move, a
type annotation, a rename), prove it on a sample and carry the results over, instead of hours of
reruns or results marked outdated for nothing.

For each model and built zoo whose E1/E2/E5/E7 results are outdated only because the model's code
hash changed (same spec, same zoo), the model's cheapest E1 cell on that zoo is rerun for its first
seed with the current code, and every metric is compared with the stored first seed (relative
tolerance ``RTOL``: float32 rounding differs from run to run in the last bits; durations are not
compared). When they agree, every such result of that model on that zoo gets the current key and a
``rekeyed`` entry saying from which code hash, at which commit, verified by which cell.

A stored result need not be reproducible bit for bit even by its own code (GL-net's early stopping
turns last-bit differences of a process's float arithmetic into another best epoch). So when the
rerun differs from the stored numbers and ``base`` (a commit whose code the stored results are
keyed to) is given, the cell is also run by that commit's code, from a git worktree, in a fresh
process, side by side: if the old and the new code give the same numbers, the change changed
nothing and the results are carried over (the entry says so); otherwise nothing is touched, and
``loravet bench`` reruns them.

Why one cell per model and zoo is enough: the cells of a model share everything the hash covers
(the model's files, the training loop, the zoo reader); the experiments differ only in their
runners and specs, which are not part of the change being checked (either would change the key's
other parts).
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.bench_cli import (
    MODEL_EXPERIMENTS,
    is_current,
    model_cells,
    model_code_hash,
)
from core.provenance import git_state

log = logging.getLogger("loravet.bench")
RTOL = 1e-5
"""Relative tolerance per metric (the last bits of float32 training differ from run to run)."""


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.endswith("_seconds")
    }


def agrees(new: dict[str, Any], old: dict[str, Any], rtol: float = RTOL) -> list[str]:
    """The metrics of one seed that differ (empty: the rerun reproduced the stored result)."""
    a, b = _numbers(new), _numbers(old)
    if set(a) != set(b):
        return [f"metrics {sorted(set(a) ^ set(b))} present on one side only"]
    return [
        f"{k}: {a[k]!r} now, {b[k]!r} stored"
        for k in sorted(a)
        if not (
            math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-12)
            or (math.isnan(a[k]) and math.isnan(b[k]))
        )
    ]


def stale_by_code_only() -> dict[tuple[str, str], list[tuple[Path, dict[str, Any], tuple]]]:
    """Per (zoo, model): written results whose spec and zoo parts still match and whose code part
    does not."""
    groups: dict[tuple[str, str], list[tuple[Path, dict[str, Any], tuple]]] = defaultdict(list)
    for experiment, spec_file in MODEL_EXPERIMENTS.items():
        for out, key, args in model_cells(experiment, spec_file):
            if not out.is_file() or is_current(out, key):
                continue
            stored = json.loads(out.read_text()).get("key", {})
            if stored.get("spec") == key["spec"] and stored.get("zoo") == key["zoo"]:
                zoo_name = out.name.split("--")[0]
                groups[(zoo_name, args[3])].append((out, key, args))
    return dict(groups)


def _probe(cells: list[tuple[Path, dict[str, Any], tuple]]) -> tuple[Path, tuple] | None:
    """The E1 cell of the group with the smallest stored training time."""
    e1 = [(out, args) for out, _, args in cells if args[0] == "e1"]
    if not e1:
        return None

    def cost(item: tuple[Path, tuple]) -> float:
        rows = json.loads(item[0].read_text()).get("per_seed", [])
        return sum(float(r.get("train_seconds", 0.0)) for r in rows) or math.inf

    return min(e1, key=cost)


def stored_note(rerun: dict[str, Any], stored: dict[str, Any]) -> str:
    keys = [k for k in ("auroc", "r2", "per_label_accuracy", "best_epoch") if k in stored]
    return ", ".join(f"{k} {rerun.get(k)!r} now vs {stored[k]!r} stored" for k in keys)


_RUNNER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks import bench_cli, model_runs
zoo_dir, task, model, spec = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
if sys.argv[6] != bench_cli.model_code_hash(model):
    sys.exit(f"the stored results are not keyed to this commit's {model} code")
print(json.dumps(model_runs.run_e1_cell(zoo_dir, task, model, spec)["per_seed"][0]))
"""


def run_at_commit(
    commit: str, zoo_dir: str, task: str, model: str, spec: dict[str, Any], code: str
) -> dict[str, Any] | None:
    """One E1 cell run by the code of ``commit`` (a temporary git worktree, a fresh process);
    None when that commit's code of ``model`` does not hash to ``code`` (the stored results'
    key), i.e. the stored results were not made by that code."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="loravet-refactor-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(tree), commit], cwd=repo, check=True
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", _RUNNER, str(tree), zoo_dir, task, model, json.dumps(spec), code],
                cwd=tree, capture_output=True, text=True,
            )  # fmt: skip
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo)
    if done.returncode != 0:
        log.warning("%s: %s", commit, (done.stderr.strip().splitlines() or ["failed"])[-1])
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def verify(
    zoo_name: str,
    model: str,
    cells: list[tuple[Path, dict[str, Any], tuple]],
    base: str | None = None,
) -> bool:
    """Rerun the probe cell's first seed; re-key the group when it reproduces the stored numbers."""
    from benchmarks import model_runs

    probe = _probe(cells)
    if probe is None:
        log.warning("verify %s/%s: no E1 result to rerun; left outdated", zoo_name, model)
        return False
    out, args = probe
    _, zoo_dir, task, _, _, cell_spec, _ = args
    one_seed = {**cell_spec, "seeds": cell_spec["seeds"][:1]}
    rerun = model_runs.run_e1_cell(zoo_dir, task, model, one_seed)["per_seed"][0]
    stored = json.loads(out.read_text())["per_seed"][0]
    differences = agrees(rerun, stored)
    seed = cell_spec["seeds"][0]
    evidence = (
        f"{out.name} seed {seed} rerun: every metric within relative {RTOL:g} of the stored one"
    )
    if differences and base is not None:
        stored_code = json.loads(out.read_text())["key"]["code"]
        old = run_at_commit(base, zoo_dir, task, model, one_seed, stored_code)
        old_differences = ["no run by that code"] if old is None else agrees(rerun, old)
        log.info(
            "verify %s/%s: %s seed %s differs from the stored result (%s); by the code of %s: %s",
            zoo_name, model, out.name, seed, "; ".join(differences), base,
            "the same numbers" if not old_differences else "; ".join(old_differences),
        )  # fmt: skip
        if not old_differences:
            differences = []
            evidence = (
                f"{out.name} seed {seed} run side by side by the code of {base} and by this code, "
                f"each in a fresh process: every metric within relative {RTOL:g} (neither "
                f"reproduces the stored seed exactly: {stored_note(rerun, stored)})"
            )
    if differences:
        log.warning(
            "verify %s/%s: %s seed %s differs (%s); its results stay outdated",
            zoo_name, model, out.name, seed, "; ".join(differences),
        )  # fmt: skip
        return False
    commit = git_state(Path(__file__).resolve().parent).get("git_sha")
    for path, key, _ in cells:
        doc = json.loads(path.read_text())
        doc.setdefault("rekeyed", []).append(
            {
                "from_code": doc["key"]["code"],
                "to_code": key["code"],
                "at_commit": commit,
                "verified_by": evidence,
            }
        )
        doc["key"] = key
        path.write_text(json.dumps(doc, indent=1) + "\n")
    log.info(
        "verify %s/%s: reproduced by %s; %d result(s) carried over",
        zoo_name, model, out.name, len(cells),
    )  # fmt: skip
    return True


def verify_refactor(models: set[str] | None = None, base: str | None = None) -> dict[str, bool]:
    """Verify every (zoo, model) group outdated by code alone; returns ``{"zoo/model": ok}``."""
    groups = stale_by_code_only()
    done = {}
    for (zoo_name, model), cells in sorted(groups.items()):
        if models and model not in models:
            continue
        log.info(
            "verify %s/%s: %d result(s) outdated by a code change (now %s)",
            zoo_name, model, len(cells), model_code_hash(model),
        )  # fmt: skip
        done[f"{zoo_name}/{model}"] = verify(zoo_name, model, cells, base)
    return done
