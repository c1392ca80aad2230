"""``loravet bench --verify-refactor``: after a change that should not change any number (a move, a
type annotation, a rename), prove it on a sample and carry the results over, instead of hours of
reruns or results marked outdated for nothing.

For each model and built zoo whose E1/E2/E5/E7 results are outdated only because the model's code
hash changed (same spec, same zoo), the model's cheapest E1 cell on that zoo is rerun for its first
seed with the current code, and every metric is compared with the stored first seed (relative
tolerance ``RTOL``: float32 rounding differs from run to run in the last bits; durations are not
compared). When they agree, every such result of that model on that zoo gets the current key and a
``rekeyed`` entry saying from which code hash, at which commit, verified by which cell. When they
do not, nothing is touched: the change did change results, and ``loravet bench`` reruns them.

Why one cell per model and zoo is enough: the cells of a model share everything the hash covers
(the model's files, the training loop, the zoo reader); the experiments differ only in their
runners and specs, which are not part of the change being checked (either would change the key's
other parts).
"""

from __future__ import annotations

import json
import logging
import math
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


def verify(zoo_name: str, model: str, cells: list[tuple[Path, dict[str, Any], tuple]]) -> bool:
    """Rerun the probe cell's first seed; re-key the group when it reproduces the stored numbers."""
    from benchmarks import model_runs

    probe = _probe(cells)
    if probe is None:
        log.warning("verify %s/%s: no E1 result to rerun; left outdated", zoo_name, model)
        return False
    out, args = probe
    _, zoo_dir, task, _, _, cell_spec = args
    one_seed = {**cell_spec, "seeds": cell_spec["seeds"][:1]}
    rerun = model_runs.run_e1_cell(zoo_dir, task, model, one_seed)["per_seed"][0]
    stored = json.loads(out.read_text())["per_seed"][0]
    differences = agrees(rerun, stored)
    if differences:
        log.warning(
            "verify %s/%s: %s seed %s differs (%s); its results stay outdated",
            zoo_name, model, out.name, cell_spec["seeds"][0], "; ".join(differences),
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
                "verified_by": f"{out.name} seed {cell_spec['seeds'][0]} rerun: every metric "
                f"within relative {RTOL:g} of the stored one",
            }
        )
        doc["key"] = key
        path.write_text(json.dumps(doc, indent=1) + "\n")
    log.info(
        "verify %s/%s: reproduced by %s; %d result(s) carried over",
        zoo_name, model, out.name, len(cells),
    )  # fmt: skip
    return True


def verify_refactor(models: set[str] | None = None) -> dict[str, bool]:
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
        done[f"{zoo_name}/{model}"] = verify(zoo_name, model, cells)
    return done
