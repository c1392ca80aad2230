"""``loravet predictors``: publish predictor directories to the content store as one named set.

Why: workers on machines that share no filesystem with the trainer load predictors from the store
(``LORAVET_WORKER_PREDICTOR_SET``). Publishing reads the same store settings as the workers
(``LORAVET_WORKER_STORE_BACKEND``, ``..._STORAGE_DIR``, ``..._S3_*``), so a set published from a
worker host's environment is one its workers can fetch.

    loravet predictors publish predictors/
    loravet predictors publish predictors/minilm-topics-harmful-gl_net --json

Exit codes: 0 published, 1 the store cannot be used now, 2 bad input (one ``error:`` line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import ValidationError

from core.cli_support import Parser, settings_error


def build_parser() -> Parser:
    p = Parser(prog="loravet predictors", description="Publish predictors to the content store.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    publish = sub.add_parser(
        "publish", help="upload predictor directories as one set; print its sha256"
    )
    publish.add_argument(
        "directory", type=Path, help="a predictor directory, or a directory of them (predictors/)"
    )
    publish.add_argument(
        "--storage", type=Path, help="local store directory (LORAVET_WORKER_STORAGE_DIR)"
    )
    publish.add_argument("--json", action="store_true", help="print the set's manifest as JSON")
    return p


def main(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from core.content_store import StoreUnavailableError, open_content_store
    from core.predictor_sets import PredictorSetError, publish_predictor_set
    from workers.settings import WorkerSettings

    try:
        settings = WorkerSettings(**({"storage_dir": args.storage} if args.storage else {}))
    except ValidationError as exc:
        print(
            f"error: invalid store settings: {settings_error(exc, 'LORAVET_WORKER_')}",
            file=sys.stderr,
        )
        return 2
    try:
        digest, entries = publish_predictor_set(open_content_store(settings), args.directory)
    except PredictorSetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"predictor_set": digest, "predictors": entries}, indent=2))
    else:
        names = ", ".join(entries)
        print(f"published {len(entries)} predictor(s) ({names}) as set {digest}")
        print(f"workers load it with LORAVET_WORKER_PREDICTOR_SET={digest}")
    return 0
