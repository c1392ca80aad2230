"""``loravet zoo``: build or verify a zoo of real LoRA finetunes with measured labels.

    loravet zoo build --recipe digits --count 30000 --out zoos/digits --jobs 2
    loravet zoo build --recipe minilm-topics --count 1000 --out zoos/minilm-topics --jobs 1
    loravet zoo build --recipe digits --count 4 --out /tmp/tiny --steps-scale 0.05   # CPU smoke
    loravet zoo verify zoos/digits --sample 20
    loravet zoo index zoos/digits          # regenerate manifest/splits/zoo.json only

Spread over machines (Redis and the content store in common; see zoo/distributed_build.py):

    loravet zoo build --recipe causal-lm --count 1000 --queue redis://redis:6379/0
    loravet zoo worker --device cuda        # on every machine, any number of times
    loravet zoo pull causal-lm-0123456789ab --queue redis://redis:6379/0 --out zoos/causal-lm

Exit codes: 0 success, 1 verify found a mismatch or the build failed, 2 bad input (one line
``error: ...`` on stderr, never a traceback).
"""

from __future__ import annotations

import os

from pydantic import ValidationError

from core.cli_support import Parser, settings_error

# One thread per process, for BLAS too: these must be set before numpy loads its BLAS (spawned
# workers inherit them). Two processes each spinning two BLAS threads on a two-core machine
# thrash; a small SVD then takes minutes instead of milliseconds.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from zoo.recipes import RECIPES, UnknownRecipeError  # noqa: E402

if TYPE_CHECKING:
    from redis import Redis


def _parser() -> Parser:
    parser = Parser(prog="loravet zoo", description="Build or verify a zoo of real LoRA finetunes.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    build = sub.add_parser("build", help="finetune LoRAs 0..N-1 of a recipe (resumable)")
    build.add_argument("--recipe", required=True, help=f"one of: {', '.join(RECIPES)}")
    build.add_argument("--count", type=int, required=True, help="number of LoRAs (indices 0..N-1)")
    build.add_argument(
        "--out", type=Path, help="zoo directory (created; resumed if present); not with --queue"
    )
    build.add_argument(
        "--queue",
        metavar="REDIS_URL",
        help="instead of building here: queue one job per LoRA for `loravet zoo worker`s",
    )
    build.add_argument(
        "--job-timeout",
        type=int,
        default=4 * 3600,
        metavar="S",
        help="with --queue: most seconds one LoRA may take",
    )
    build.add_argument(
        "--jobs", type=int, default=1, help="worker processes, one torch thread each"
    )
    build.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply training steps/epochs (e.g. 0.05 for smoke tests)",
    )
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument(
        "--base",
        help="causal-lm only: a packaged base (smollm2-135m-instruct, the default), a local "
        "Hugging Face model directory or a .gguf file",
    )
    build.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="causal-lm only: where to train"
    )
    verify = sub.add_parser(
        "verify", help="check files and rebuild a random sample from recorded seeds"
    )
    verify.add_argument("zoo_dir", type=Path, help="zoo directory")
    verify.add_argument("--sample", type=int, default=5, help="number of LoRAs to rebuild")
    verify.add_argument("--seed", type=int, default=0, help="which random sample")
    verify.add_argument(
        "--tolerance", type=float, default=0.02, help="allowed difference of accuracy labels"
    )
    index = sub.add_parser("index", help="regenerate manifest.jsonl, splits.json and zoo.json")
    index.add_argument("zoo_dir", type=Path, help="zoo directory")
    worker = sub.add_parser(
        "worker", help="build queued zoo LoRAs (store and Redis from LORAVET_WORKER_*)"
    )
    worker.add_argument("--redis-url", help="Redis URL (LORAVET_WORKER_REDIS_URL)")
    worker.add_argument(
        "--storage", type=Path, help="local store / scratch directory (LORAVET_WORKER_STORAGE_DIR)"
    )
    worker.add_argument("--device", choices=("cpu", "cuda"), help="where to train")
    worker.add_argument("--name", help="worker name in Redis (default host.pid)")
    worker.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    pull = sub.add_parser("pull", help="gather a queued build's finished LoRAs into a directory")
    pull.add_argument("build_id", help="the id `zoo build --queue` printed")
    pull.add_argument("--queue", metavar="REDIS_URL", required=True, help="the build's Redis")
    pull.add_argument("--out", type=Path, required=True, help="zoo directory to fill")
    pull.add_argument(
        "--storage", type=Path, help="local store directory (LORAVET_WORKER_STORAGE_DIR)"
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``loravet zoo``; returns the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error, already said in one line (2)
        return int(exc.code or 0)
    try:
        return _dispatch(args)
    except UnknownRecipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from zoo.build_zoo import BuildConfig, ZooBuildError, build_zoo
    from zoo.causal_lm_base import BaseModelError
    from zoo.verify_zoo import ZooVerifyError, verify_zoo

    try:
        if args.command == "worker":
            return _worker(args)
        if args.command == "pull":
            return _pull(args)
        if args.command == "build":
            if args.recipe not in RECIPES:
                raise UnknownRecipeError(
                    f"unknown recipe {args.recipe!r}; accepted: {', '.join(RECIPES)}"
                )
            if not 0 < args.steps_scale <= 10:
                raise ZooBuildError(f"--steps-scale must be in (0, 10] (got {args.steps_scale})")
            if args.queue is not None:
                return _enqueue(args)
            if args.out is None:
                raise ZooBuildError(
                    "--out DIR is required (or --queue REDIS_URL to spread the build)"
                )
            cfg = BuildConfig(
                args.recipe,
                args.count,
                args.out,
                args.jobs,
                args.steps_scale,
                not args.no_progress,
                args.base,
                args.device,
            )
            count = build_zoo(cfg)
            print(f"zoo {args.out}: {count} LoRAs ({args.recipe}); log in {args.out / 'build.log'}")
            return 0
        if args.command == "verify":
            if args.sample < 1:
                raise ZooVerifyError(f"--sample must be at least 1 (got {args.sample})")
            return 0 if verify_zoo(args.zoo_dir, args.sample, args.seed, args.tolerance) else 1
        return _index(args.zoo_dir)
    except (ZooBuildError, ZooVerifyError, BaseModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _redis(url: str) -> Redis:
    from redis import Redis
    from redis.exceptions import RedisError

    from zoo.build_zoo import ZooBuildError

    try:
        redis = Redis.from_url(url)
    except ValueError as exc:
        raise ZooBuildError(
            f"{url!r} is not a Redis URL ({exc}); accepted: redis://[:password@]host:port/db"
        ) from None
    try:
        redis.ping()
    except RedisError as exc:
        raise ZooBuildError(f"Redis at {url} does not answer: {exc}") from None
    return redis


def _enqueue(args: argparse.Namespace) -> int:
    from zoo.build_zoo import ZooBuildError
    from zoo.distributed_build import enqueue_build, resolve_build

    if args.out is not None:
        raise ZooBuildError(
            "--out is for local builds; with --queue, gather with `loravet zoo pull`"
        )
    if args.job_timeout < 1:
        raise ZooBuildError(f"--job-timeout must be at least 1 s (got {args.job_timeout})")
    build = resolve_build(args.recipe, args.count, args.steps_scale, args.base)
    done = enqueue_build(_redis(args.queue), build, args.job_timeout)
    print(
        f"zoo build {done.build_id}: {done.queued} LoRAs queued, {done.in_flight} already queued "
        f"or running, {done.finished} finished"
    )
    print(
        f"run `loravet zoo worker` on any machine with this Redis and store; then "
        f"`loravet zoo pull {done.build_id} --queue {args.queue} --out DIR`"
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    import logging

    from zoo.build_zoo import ZooBuildError
    from zoo.distributed_build import ZooWorkerSettings, run_worker

    overrides = {
        "redis_url": args.redis_url,
        "storage_dir": args.storage,
        "device": args.device,
        "name": args.name,
    }
    try:
        settings = ZooWorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ZooBuildError(
            f"invalid worker settings: {settings_error(exc, 'LORAVET_WORKER_')}"
        ) from None
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ZooBuildError(
                f"--device cuda: torch {torch.__version__} sees no CUDA device here; "
                "accepted on this machine: --device cpu"
            )
    _redis(settings.redis_url)
    return run_worker(settings, burst=args.burst)


def _pull(args: argparse.Namespace) -> int:
    from core.content_store import StoreUnavailableError, open_content_store
    from zoo.build_zoo import ZooBuildError
    from zoo.distributed_build import ZooWorkerSettings, pull_build

    try:
        settings = ZooWorkerSettings(**({"storage_dir": args.storage} if args.storage else {}))
    except ValidationError as exc:
        raise ZooBuildError(
            f"invalid store settings: {settings_error(exc, 'LORAVET_WORKER_')}"
        ) from None
    try:
        got = pull_build(_redis(args.queue), open_content_store(settings), args.build_id, args.out)
    except StoreUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"zoo {args.out}: pulled {got.pulled} new LoRAs; {got.finished} of {got.count} finished "
        f"({got.indexed} indexed)"
    )
    return 0


def _index(zoo_dir: Path) -> int:
    from zoo.recipes import make_recipe
    from zoo.zoo_manifest import read_finetune_rows, write_index

    if not zoo_dir.is_dir():
        print(f"error: zoo directory {zoo_dir} does not exist", file=sys.stderr)
        return 2
    rows = read_finetune_rows(zoo_dir)
    if not rows:
        print(f"error: {zoo_dir} holds no finished LoRAs", file=sys.stderr)
        return 2
    recipe = make_recipe(
        rows[0]["recipe"],
        rows[0]["hyperparameters"]["steps_scale"],
        rows[0]["provenance"].get("base_source"),
    )
    count = write_index(zoo_dir, recipe.membership_names, recipe.spec.description)
    print(f"zoo {zoo_dir}: indexed {count} LoRAs")
    return 0
