"""Build a zoo: finetune LoRAs ``0..count-1`` of a recipe, resumably, with K worker processes.

Why it is shaped this way:
- Deterministic per LoRA: everything about LoRA ``i`` derives from (recipe, i), so the order in
  which workers pick indices does not matter and ``loravet zoo verify`` can rebuild any of them.
- Resumable: each LoRA is written into ``DIR/.tmp/`` and renamed into ``DIR/<id>/`` only when its
  adapter and ``finetune.json`` are complete, so a killed build leaves no half-written LoRA, and a
  rerun skips every finished id.
- One torch thread per process: two processes with two threads each on a two-core machine are
  several times slower than one thread each (reference/machine-notes.md, section 5).
- Workers are spawned (not forked) and each loads the base model once.

    loravet zoo build --recipe digits --count 30000 --out zoos/digits --jobs 2
    loravet zoo build --recipe minilm-topics --count 4 --out /tmp/z --jobs 1 --steps-scale 0.05
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.provenance import file_sha256
from zoo.adapter_files import ADAPTER_FILE, CONFIG_FILE
from zoo.recipe_base import Recipe, stopwatch
from zoo.recipes import make_recipe
from zoo.zoo_manifest import FINETUNE_FILE, harmful_status, package_versions, write_index

TMP_DIR = ".tmp"
LOG_FILE = "build.log"
REINDEX_SECONDS = 300.0
"""During long builds the manifest/splits/zoo.json are refreshed this often (seconds)."""

log = logging.getLogger("zoo.build")


class ZooBuildError(ValueError):
    """Bad build input (incompatible existing zoo, bad arguments): reported as ``error: ...``."""


@dataclass(frozen=True)
class BuildConfig:
    """One ``loravet zoo build`` invocation."""

    recipe: str
    count: int
    out: Path
    jobs: int = 1
    steps_scale: float = 1.0
    progress: bool = True
    base: str | None = None
    """``--base`` of recipes that take one (``causal-lm``); None: the recipe's default."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ZooBuildError(f"--count must be at least 1 (got {self.count})")
        if self.jobs < 1:
            raise ZooBuildError(f"--jobs must be at least 1 (got {self.jobs})")


def quiet_libraries() -> None:
    """One torch thread, offline hub, no library progress bars or deprecation chatter."""
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


# -- worker side -------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def init_worker(
    recipe_name: str, steps_scale: float, zoo_dir: str, base: str | None = None, device: str = "cpu"
) -> None:
    """Pool initializer: one thread, then load the recipe's base model once for this process."""
    quiet_libraries()
    recipe = make_recipe(recipe_name, steps_scale, base, device)
    recipe.load(Path(zoo_dir))
    _WORKER.update(recipe=recipe, zoo_dir=Path(zoo_dir))


def finetune_row(recipe: Recipe, index: int, out_dir: Path) -> dict[str, Any]:
    """Train and measure LoRA ``index`` into ``out_dir``; return its ``finetune.json`` document."""
    lora_id = recipe.spec.lora_id(index)
    cpu_start = (
        time.process_time()
    )  # this process's CPU time: the cost, whatever else shares the machine
    with stopwatch() as total:
        hp = recipe.sample(index)
        outcome = recipe.finetune(index, hp, out_dir)
    cpu_seconds = time.process_time() - cpu_start
    adapter = out_dir / ADAPTER_FILE
    return {
        "id": lora_id,
        "index": index,
        "recipe": recipe.name,
        "seed": recipe.spec.seed_for(index),
        "base_model": recipe.base_model,
        "file": f"{lora_id}/{ADAPTER_FILE}",
        "config_file": f"{lora_id}/{CONFIG_FILE}",
        "sha256": file_sha256(adapter),
        "size_bytes": adapter.stat().st_size,
        "membership_key": recipe.membership_key,
        "hyperparameters": outcome.hyperparameters,
        "labels": outcome.labels,
        "timings": {
            "train_seconds": round(outcome.train_seconds, 4),
            "eval_seconds": round(outcome.labels["eval_seconds"], 4),
            "total_seconds": round(total[0], 4),
            "cpu_seconds": round(cpu_seconds, 4),
        },
        "provenance": {
            **recipe.provenance(),
            "sweep_sha256": recipe.spec.sha256,
            "versions": package_versions(),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_lora(recipe: Recipe, index: int, tmp_root: Path) -> tuple[Path, dict[str, Any]]:
    """Build LoRA ``index`` into a fresh folder under ``tmp_root``: its adapter, config and
    ``finetune.json``. Returns (folder, row); the caller moves or uploads the folder whole."""
    tmp = tmp_root / f"{recipe.spec.lora_id(index)}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    row = finetune_row(recipe, index, tmp)
    (tmp / FINETUNE_FILE).write_text(json.dumps(row, indent=1) + "\n")
    return tmp, row


def lora_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The short line a build logs per finished LoRA."""
    labels = row["labels"]
    return {
        "id": row["id"],
        "seconds": row["timings"]["total_seconds"],
        "quality": labels["quality"],
        "asr": labels["attack_success_rate"],
        "status": harmful_status(labels["harmful"]),
        "rank": labels["rank"],
    }


def run_index(index: int) -> dict[str, Any]:
    """Build one LoRA atomically (temp dir, then rename) and return a short summary for the log."""
    recipe: Recipe = _WORKER["recipe"]
    zoo_dir: Path = _WORKER["zoo_dir"]
    final = zoo_dir / recipe.spec.lora_id(index)
    tmp, row = write_lora(recipe, index, zoo_dir / TMP_DIR)
    if final.exists():  # another process finished it first: keep theirs
        shutil.rmtree(tmp)
    else:
        os.rename(tmp, final)
    return lora_summary(row)


# -- main process --------------------------------------------------------------------------------


def check_existing(out: Path, recipe: str, steps_scale: float, base: str | None) -> None:
    """Refuse to mix recipes, step scales or bases in one zoo directory."""
    for child in sorted(out.iterdir()):
        result = child / FINETUNE_FILE
        if result.is_file():
            row = json.loads(result.read_text())
            if row["recipe"] != recipe:
                raise ZooBuildError(
                    f"{out} holds a {row['recipe']!r} zoo; cannot add {recipe!r} LoRAs to it"
                )
            if row["hyperparameters"]["steps_scale"] != steps_scale:
                raise ZooBuildError(
                    f"{out} was built with --steps-scale {row['hyperparameters']['steps_scale']}; "
                    f"resume it with the same value (got {steps_scale})"
                )
            built_on = row["provenance"].get("base_source")
            if built_on is not None and base is not None and built_on != base:
                raise ZooBuildError(
                    f"{out} was built on --base {built_on}; resume it with the same base (got {base})"
                )
            return


def _open_log(out: Path) -> logging.Handler:
    handler = logging.FileHandler(out / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def build_zoo(cfg: BuildConfig) -> int:
    """Build (or resume) the zoo described by ``cfg``; return the number of LoRAs in it.

    Raises:
        UnknownRecipeError / ZooBuildError: bad input, before any work is done.
    """
    recipe = make_recipe(cfg.recipe, cfg.steps_scale, cfg.base, cfg.device)
    if cfg.out.exists() and not cfg.out.is_dir():
        raise ZooBuildError(f"--out {cfg.out} exists and is not a directory")
    cfg.out.mkdir(parents=True, exist_ok=True)
    source = getattr(
        recipe, "source", None
    )  # the base a causal-lm build resolved (default included)
    check_existing(cfg.out, recipe.name, cfg.steps_scale, getattr(source, "name", cfg.base))
    shutil.rmtree(cfg.out / TMP_DIR, ignore_errors=True)
    handler = _open_log(cfg.out)
    try:
        quiet_libraries()
        todo = [
            i
            for i in range(cfg.count)
            if not (cfg.out / recipe.spec.lora_id(i) / FINETUNE_FILE).is_file()
        ]
        log.info(
            "build recipe=%s count=%d jobs=%d steps_scale=%g: %d finished, %d to do",
            recipe.name, cfg.count, cfg.jobs, cfg.steps_scale, cfg.count - len(todo), len(todo),
        )  # fmt: skip
        if todo:
            recipe.prepare(cfg.out)
            _run_all(cfg, recipe, todo)
            shutil.rmtree(cfg.out / TMP_DIR, ignore_errors=True)
        count = write_index(cfg.out, recipe.membership_names, recipe.spec.description)
        log.info("indexed %d LoRAs", count)
        return count
    except BaseException:
        log.exception("build stopped")
        raise
    finally:
        log.removeHandler(handler)
        handler.close()


def _run_all(cfg: BuildConfig, recipe: Recipe, todo: list[int]) -> None:
    from tqdm import tqdm

    bar = tqdm(
        total=len(todo),
        desc=f"zoo {recipe.name}",
        unit="lora",
        disable=not cfg.progress,
        mininterval=2.0,
    )
    last_index = time.monotonic()

    def record(summary: dict[str, Any]) -> None:
        nonlocal last_index
        log.info(
            "%s rank=%d %.2fs quality=%.3f asr=%.3f %s",
            summary["id"], summary["rank"], summary["seconds"], summary["quality"], summary["asr"], summary["status"],
        )  # fmt: skip
        bar.update(1)
        if time.monotonic() - last_index > REINDEX_SECONDS:
            write_index(cfg.out, recipe.membership_names, recipe.spec.description)
            last_index = time.monotonic()

    try:
        if cfg.jobs == 1:
            init_worker(recipe.name, cfg.steps_scale, str(cfg.out), cfg.base, cfg.device)
            for index in todo:
                record(run_index(index))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(
                cfg.jobs,
                initializer=init_worker,
                initargs=(recipe.name, cfg.steps_scale, str(cfg.out), cfg.base, cfg.device),
            ) as pool:
                for summary in pool.imap_unordered(run_index, todo):
                    record(summary)
    finally:
        bar.close()
