"""``loravet bench``: run the benchmark experiments whose results are missing or outdated.

    loravet bench                 # everything missing or outdated, then the summary
    loravet bench --only e3       # one experiment
    loravet bench --summary-only  # regenerate SUMMARY.md and the plots from committed results
    loravet bench --verify-refactor  # carry results over a change shown (by one rerun seed per
                                     # model and zoo) not to change any number

A result is outdated when its experiment spec, the zoo (manifest and splits) it used, or the source it
ran (``training/`` and the model's own files in ``models/``; for E3/E4 all of ``models/``) changed
since it was written. Results are JSON under
``benchmarks/results/`` with provenance (git sha, package versions, machine).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.cli_support import fail
from core.provenance import file_sha256, provenance
from training.experiment_settings import cell_settings, load_spec
from zoo.zoo_manifest import write_json_atomic, zoo_digests

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
EXPERIMENTS = ROOT / "experiments"
RESULTS = ROOT / "results"
log = logging.getLogger("loravet.bench")
MODEL_EXPERIMENTS = {
    "e1": "e1_models_tasks.json",
    "e2": "e2_rank_generalisation.json",
    "e5": "e5_quality_via_task.json",
    "e7": "e7_held_out_triggers.json",
}
EXPERIMENT_NAMES = ("e1", "e2", "e3", "e4", "e5", "e6", "e7")
E4_ZOOS = ("digits", "minilm-topics", "causal-lm")
E6_ZOOS = ("digits", "minilm-topics", "causal-lm")


def code_hash(folders: tuple[str, ...] = ("models", "training")) -> str:
    """Hash of the source an experiment depends on: a change there makes its results outdated."""
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted((REPO / folder).glob("*.py")):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def local_imports(path: Path, package: str) -> set[Path]:
    """The files of ``package`` (a top-level folder) that ``path`` imports, directly or not."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):  # ``from pkg import mod`` imports pkg/mod.py
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                dep = REPO.joinpath(*parts).with_suffix(".py")
                if parts[0] == package and dep.is_file() and dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
    return seen


@functools.cache
def model_code_hash(model: str) -> str:
    """Hash of the source one model's E1/E2/E5 results depend on: the ``training/`` files the cells
    run (``model_runs.py``'s imports, followed; not the CLIs), the model's own module, and what
    these import from ``models/`` (not the catalog, which imports every model). So a change to one
    model family, or to a CLI, does not outdate every result. Cached: one bench run asks once per
    cell, and the sources do not change under it."""
    from models.model_catalog import MODEL_CATALOG

    module = REPO.joinpath(*MODEL_CATALOG[model][1].__module__.split(".")).with_suffix(".py")
    training = local_imports(ROOT / "model_runs.py", "training")
    files = {module} | local_imports(module, "models")
    for path in training:
        files |= local_imports(path, "models")
    files.discard(REPO / "models" / "model_catalog.py")
    h = hashlib.sha256()
    for path in sorted(training) + sorted(files):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def spec_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def zoo_hash(zoo_dir: Path) -> str | None:
    """Hash of what a model result depends on in a zoo: its LoRAs and labels, and its splits."""
    digests = zoo_digests(zoo_dir)
    if "zoo_manifest_sha256" not in digests:
        return None
    parts = [digests["zoo_manifest_sha256"], digests.get("zoo_splits_sha256", "")]
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def is_current(path: Path, key: dict[str, Any]) -> bool:
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def write_result(
    path: Path, key: dict[str, Any], result: dict[str, Any], zoo_dir: Path | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "key": key,
        "provenance": provenance(zoo_digests(zoo_dir) if zoo_dir else None),
        **result,
    }
    write_json_atomic(path, doc)


def seed_progress_path(out: Path) -> Path:
    """Where a running cell keeps its finished seeds (``model_runs.SeedProgress``): beside the
    results folder ``out`` is written to (``<results>/partial/<experiment>/``), removed once the
    cell's result is written. In git, not a scratch folder: a causal-lm cell's seed can take a CPU-hour
    and a session can end (and its machine be reset) mid-cell, so finished seeds are committed like
    results and the next session resumes from them. Derived from ``out`` alone, so the pool's
    processes and the parent agree on it."""
    return out.parent.parent / "partial" / out.parent.name / out.name


def _cell_task(
    args: tuple[str, str, str, str, str, dict[str, Any], dict[str, Any]],
) -> tuple[str, dict[str, Any]]:
    from benchmarks import e7_held_out_triggers, model_runs
    from training.zoo_dataset import TASKS

    experiment, zoo_dir, task, model, out, spec, key = args
    assert task in TASKS, task
    if experiment == "e7":  # one fit per seed as well, but its runner is keyed by its own source
        return out, e7_held_out_triggers.run_e7_cell(zoo_dir, task, model, spec)
    runner = {
        "e1": model_runs.run_e1_cell,
        "e2": model_runs.run_e2_cell,
        "e5": model_runs.run_e5_cell,
    }[experiment]
    progress = model_runs.SeedProgress(seed_progress_path(Path(out)), key)
    return out, runner(zoo_dir, task, model, spec, progress)


PROSE = ("name", "what", "why")  # and every ``*_note``


def cell_spec_of(
    spec: dict[str, Any], zoo_name: str, model: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """What one cell's result depends on in its experiment spec: its own zoo and model settings and
    the shared fields, not the other zoos or models nor the prose (``what``, ``why``, notes). So
    adding a zoo or a model to a spec, or rewording it, leaves the results already written current."""
    shared = {
        k: v
        for k, v in spec.items()
        if k not in ("zoos", "models") and k not in PROSE and not k.endswith("_note")
    }
    return {**shared, "zoo": {zoo_name: spec["zoos"][zoo_name]}, "models": {model: settings}}


def run_models(spec: dict[str, Any]) -> list[str]:
    """The models an E1/E2/E5/E7 spec runs: its ``run_models``, else every model it configures."""
    return list(spec.get("run_models", spec["models"]))


def model_cells(
    experiment: str, spec_file: str, zoos: set[str] | None = None
) -> list[tuple[Path, dict[str, Any], tuple]]:
    spec = load_spec(EXPERIMENTS / spec_file)
    cells = []
    for zoo_name, zoo_rel in spec["zoos"].items():
        if zoos and zoo_name not in zoos:
            continue
        zoo_dir = REPO / zoo_rel
        zh = zoo_hash(zoo_dir)
        if zh is None:
            log.warning(
                "%s: zoo %s is not built (%s); its cells are skipped", experiment, zoo_name, zoo_dir
            )
            continue
        for task in spec["tasks"]:
            for model in run_models(spec):
                if task not in spec["models"][model].get("tasks", spec["tasks"]):
                    continue  # a model that scores only some tasks (token_scan: harmful)
                # E5 trains each model on another task (membership) than the one it reports
                settings = cell_settings(
                    spec["models"][model], zoo_name, spec.get("stage1_task", task)
                )
                cell_spec = cell_spec_of(spec, zoo_name, model, settings)
                key = {"spec": spec_hash(cell_spec), "zoo": zh, "code": model_code_hash(model)}
                if experiment == "e7":  # its cell runner lives beside model_runs
                    key["runner"] = file_sha256(ROOT / "e7_held_out_triggers.py")[:16]
                out = RESULTS / experiment / f"{zoo_name}--{task}--{model}.json"
                cells.append(
                    (out, key, (experiment, str(zoo_dir), task, model, str(out), cell_spec, key))
                )
    return cells


def run_model_experiments(
    experiments: list[str], jobs: int, zoos: set[str] | None = None, models: set[str] | None = None
) -> None:
    """Run the missing or outdated E1/E2/E5 cells of ``experiments`` in one pool of ``jobs`` processes.

    One pool for all of them, GL-net's cells first: a GL-net cell takes several times as long as a
    baseline's, and starting the longest jobs first keeps every core busy to the end instead of
    leaving one GL-net cell running alone after each experiment. ``models`` narrows the run to those
    models, so that a session with little time can land the cheap baselines' cells first."""
    known = {
        model
        for experiment in experiments
        for model in run_models(load_spec(EXPERIMENTS / MODEL_EXPERIMENTS[experiment]))
    }
    if unknown := (models or set()) - known:
        raise SystemExit(fail(f"no {'+'.join(experiments)} cells for model(s) {sorted(unknown)}; "
                              f"models: {', '.join(sorted(known))}"))  # fmt: skip
    todo = [
        (out, key, args)
        for experiment in experiments
        for out, key, args in model_cells(experiment, MODEL_EXPERIMENTS[experiment], zoos)
        if (not models or args[3] in models) and not is_current(out, key)
    ]
    todo.sort(key=lambda cell: cell[2][3] != "gl_net")  # stable: spec order otherwise
    log.info("%s: %d cell(s) to run", "+".join(experiments), len(todo))
    if not todo:
        return
    keys = {str(out): (key, args[0], Path(args[1]), args[2], args[3]) for out, key, args in todo}
    ctx = mp.get_context("spawn")
    with ctx.Pool(jobs) as pool:
        for out, result in tqdm(
            pool.imap_unordered(_cell_task, [a for _, _, a in todo]),
            total=len(todo),
            desc="+".join(experiments),
        ):
            key, experiment, zoo_dir, task, model = keys[out]
            write_result(
                Path(out),
                key,
                {
                    "experiment": experiment,
                    "zoo": zoo_dir.name,
                    "task": task,
                    "model": model,
                    **result,
                },
                zoo_dir,
            )
            seed_progress_path(Path(out)).unlink(missing_ok=True)
            log.info("%s: wrote %s", experiment, out)


def e3_spec() -> dict[str, Any]:
    return json.loads((EXPERIMENTS / "e3_timing.json").read_text())


def e3_key(spec: dict[str, Any]) -> dict[str, Any]:
    return {"spec": spec_hash(spec), "code": code_hash(("models",))}


def roofline_spec() -> dict[str, Any]:
    return json.loads((EXPERIMENTS / "e3_roofline.json").read_text())


def e4_key(zoo_hash_: str) -> dict[str, Any]:
    return {"zoo": zoo_hash_, "code": code_hash(("models", "lora_io"))}


def predictors_hash() -> str:
    """Hash of every shipped predictor file: E6 judges the predictors that ship."""
    from loravet import SHIPPED_PREDICTORS

    h = hashlib.sha256()
    for path in sorted(SHIPPED_PREDICTORS.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(SHIPPED_PREDICTORS)).encode())
            h.update(file_sha256(path).encode())
    return h.hexdigest()[:16]


def e6_key(zoo_hash_: str) -> dict[str, Any]:
    return {
        "zoo": zoo_hash_,
        "predictors": predictors_hash(),
        "code": code_hash(("models", "lora_io", "workers")),
    }


def outdated_results() -> list[Path]:
    """Written results whose key no longer matches (the experiment spec, the zoo's labels or splits,
    or the code changed since): the summary names them rather than pass them off as current."""
    stale = [
        out
        for experiment, spec_file in MODEL_EXPERIMENTS.items()
        for out, key, _ in model_cells(experiment, spec_file)
        if out.is_file() and not is_current(out, key)
    ]
    for out, spec_of in (
        (RESULTS / "e3" / "e3_timing.json", e3_spec),
        (RESULTS / "e3" / "e3_roofline.json", roofline_spec),
    ):
        if out.is_file() and not is_current(out, e3_key(spec_of())):
            stale.append(out)
    for zoo_name in E4_ZOOS:
        out, zh = RESULTS / "e4" / f"{zoo_name}.json", zoo_hash(REPO / "zoos" / zoo_name)
        if out.is_file() and zh is not None and not is_current(out, e4_key(zh)):
            stale.append(out)
    worker = RESULTS / "e4_worker" / "minilm-topics.json"
    zh = zoo_hash(REPO / "zoos" / "minilm-topics")
    if worker.is_file() and zh is not None and not is_current(worker, e4_worker_key(zh)):
        stale.append(worker)
    for zoo_name in E6_ZOOS:
        out, zh = RESULTS / "e6" / f"{zoo_name}.json", zoo_hash(REPO / "zoos" / zoo_name)
        if out.is_file() and zh is not None and not is_current(out, e6_key(zh)):
            stale.append(out)
    return stale


def unchecked_zoos() -> dict[str, int]:
    """Zoos that are not built here, with how many written results are on them: those results
    cannot be checked against their zoo (``outdated_results`` skips them), and the summary says so
    rather than let them pass for checked and current."""
    names = {zoo for spec_file in MODEL_EXPERIMENTS.values()
             for zoo in load_spec(EXPERIMENTS / spec_file)["zoos"]} | set(E4_ZOOS) | set(E6_ZOOS)  # fmt: skip
    counts = {}
    for zoo_name in sorted(names):
        if zoo_hash(REPO / "zoos" / zoo_name) is not None:
            continue
        written = set(RESULTS.glob(f"*/{zoo_name}--*.json"))  # E1/E2/E5/E7 cells
        for folder in ("e4", "e4_worker", "e6"):  # one result per zoo (E6 also its "before")
            written |= set((RESULTS / folder).glob(f"{zoo_name}.*json"))
        if written:
            counts[zoo_name] = len(written)
    return counts


def run_e3() -> None:
    """E3's timing table and its roofline (GL-net against the machine's measured limit)."""
    from benchmarks import e3_roofline, e3_timing

    for name, spec, run in (
        ("e3_timing", e3_spec(), e3_timing.run),
        ("e3_roofline", roofline_spec(), e3_roofline.run),
    ):
        out = RESULTS / "e3" / f"{name}.json"
        key = e3_key(spec)
        if is_current(out, key):
            log.info("%s: current", name)
            continue
        write_result(out, key, {"experiment": "e3", **run(spec)})
        log.info("%s: wrote %s", name, out)


def zoo_results(
    experiment: str, names: tuple[str, ...], key_fn: Any, zoos: set[str] | None = None
) -> list[tuple[str, Path, Path, dict[str, Any]]]:
    """(zoo name, zoo dir, result path, key) of the per-zoo results of E4/E6 that are missing or
    outdated; zoos that are not built are skipped with a warning."""
    todo = []
    for zoo_name in names:
        if zoos and zoo_name not in zoos:
            continue
        zoo_dir = REPO / "zoos" / zoo_name
        zh = zoo_hash(zoo_dir)
        if zh is None:
            log.warning("%s: zoo %s is not built; skipped", experiment, zoo_name)
            continue
        out, key = RESULTS / experiment / f"{zoo_name}.json", key_fn(zh)
        if not is_current(out, key):
            todo.append((zoo_name, zoo_dir, out, key))
    return todo


def run_e4() -> None:
    from benchmarks import e4_speedup

    for zoo_name, zoo_dir, out, key in zoo_results("e4", E4_ZOOS, e4_key):
        write_result(
            out, key, {"experiment": "e4", "zoo": zoo_name, **e4_speedup.run(str(zoo_dir))}, zoo_dir
        )
        log.info("e4: wrote %s", out)


def e4_worker_key(zoo_hash_: str) -> dict[str, Any]:
    return {
        "zoo": zoo_hash_,
        "predictors": predictors_hash(),
        "code": code_hash(("models", "lora_io", "workers", "service", "core", "harness")),
    }


def run_e4_worker() -> None:
    """The worker's jobs per second at batch 1 and 16 (E4's service side), on minilm-topics."""
    from benchmarks import e4_worker_batches

    for zoo_name, zoo_dir, out, key in zoo_results("e4_worker", ("minilm-topics",), e4_worker_key):
        result = {"experiment": "e4_worker", "zoo": zoo_name, **e4_worker_batches.run(str(zoo_dir))}
        write_result(out, key, result, zoo_dir)
        log.info("e4 worker: wrote %s", out)


def run_e6(zoos: set[str] | None = None) -> None:
    """E6 on every built zoo. The first result of a zoo is also kept as ``<zoo>.before.json`` and
    never rewritten, so SUMMARY.md shows the verdicts before and after the work on them."""
    from benchmarks import e6_verdicts

    for zoo_name, zoo_dir, out, key in zoo_results("e6", E6_ZOOS, e6_key, zoos):
        result = {"experiment": "e6", "zoo": zoo_name, **e6_verdicts.run(str(zoo_dir))}
        write_result(out, key, result, zoo_dir)
        before = out.with_name(f"{zoo_name}.before.json")
        if not before.is_file():
            before.write_text(out.read_text())
        log.info("e6: wrote %s", out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from core.cli_support import Parser

    p: argparse.ArgumentParser = Parser(prog="loravet bench", description=__doc__.split("\n")[0])
    p.add_argument(
        "--only",
        choices=EXPERIMENT_NAMES,
        action="append",
        help="run only these experiments",
    )
    p.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--zoo", action="append", help="only these zoos (e.g. digits) for e1/e2/e5/e6")
    p.add_argument(
        "--verify-refactor",
        action="store_true",
        help="carry over the E1/E2/E5/E7 results outdated only by a code change that one rerun "
        "seed per model and zoo shows changed no number (benchmarks/refactor_check.py)",
    )
    p.add_argument(
        "--refactor-base",
        metavar="REV",
        help="with --verify-refactor: the commit the stored results are keyed to; where a rerun "
        "differs from a stored seed, that commit's code runs it too, side by side",
    )
    p.add_argument(
        "--model",
        action="append",
        help="only these models' E1/E2/E5/E7 cells (with --verify-refactor: only these models)",
    )
    args = p.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.FileHandler(RESULTS / "bench.log"), logging.StreamHandler()])  # fmt: skip
    # --model alone means the model experiments: E3/E4/E6 have no per-model cells to narrow
    only = set(args.only or (MODEL_EXPERIMENTS if args.model else EXPERIMENT_NAMES))
    if args.verify_refactor:
        from benchmarks.refactor_check import verify_refactor

        verify_refactor(set(args.model or ()), args.refactor_base)
    elif not args.summary_only:
        if "e3" in only:
            run_e3()
        if "e4" in only:
            run_e4()
            run_e4_worker()
        if "e6" in only:
            run_e6(set(args.zoo or ()))
        experiments = [e for e in MODEL_EXPERIMENTS if e in only]
        if experiments:
            run_model_experiments(
                experiments, args.jobs, set(args.zoo or ()), set(args.model or ())
            )
    from benchmarks import summary

    stale = [str(p.relative_to(RESULTS)) for p in outdated_results()]
    summary.write_summary(RESULTS, outdated=stale, unchecked=unchecked_zoos())
    if stale:
        log.warning("%d result(s) outdated (named in SUMMARY.md): %s", len(stale), ", ".join(stale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
