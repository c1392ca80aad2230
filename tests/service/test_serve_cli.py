"""``loravet serve`` (``make run``): one command brings up Redis, the API and a worker on loopback,
prints a working key, and Ctrl-C stops all of it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness.embedded_redis import free_port
from harness.inprocess import wait_for
from harness.lora_files import peft_adapter

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(x) for x in text]
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _serve(tmp_path: Path, port: int, *, stderr: int) -> subprocess.Popen[str]:
    """``loravet serve`` as a new user runs it: no LORAVET_* setting, no predictors."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORAVET_")}
    return subprocess.Popen(
        [sys.executable, "-m", "loravet.cli", "serve", "--port", str(port), "--data", str(tmp_path / "var"),
         "--predictors", str(tmp_path / "predictors")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[str]) -> None:
    """Stop a serve left running by a failed test, children included: they run in sessions of
    their own, so killing only the supervisor would leave Redis, the API and a worker behind."""
    if proc.poll() is not None:
        return
    children = _children(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_serve_runs_everything_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = _serve(tmp_path, port, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "serve exited before it was ready"
            lines.append(line)
            if line.startswith("press Ctrl-C"):
                break
        text = "".join(lines)
        assert f"http://127.0.0.1:{port}" in text
        key = next(line.split()[-1] for line in lines if line.startswith("API key"))
        assert (
            f"curl -H 'X-API-Key: {key}' -F file=@adapter_model.safetensors http://127.0.0.1:{port}/v1/adapters"
            in text
        )
        base = f"http://127.0.0.1:{port}"
        r = httpx.post(
            f"{base}/v1/adapters",
            files={"file": ("a.safetensors", peft_adapter(51))},
            headers={"X-API-Key": key},
        )
        assert r.status_code == 202, r.text
        status_url = r.json()["status_url"]
        wait_for(
            lambda: (
                httpx.get(status_url, headers={"X-API-Key": key}).json()["status"] == "finished"
            ),
            timeout_s=30,
        )
        assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        children = _children(proc.pid)
        assert len(children) == 3  # redis, worker, api
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert not [c for c in children if _alive(c)]
        assert (tmp_path / "var" / "redis" / "appendonlydir").is_dir()  # AOF on
    finally:
        _stop(proc)


def test_a_killed_worker_is_restarted_and_the_api_stays_up(tmp_path: Path) -> None:
    """The OOM killer's case: SIGKILL the worker under ``loravet serve``. The API keeps answering,
    an upload made while no worker runs is finished by the restarted one, and the supervisor says
    what happened on stderr."""
    port = free_port()
    proc = _serve(tmp_path, port, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        key = None
        while key is None:
            line = proc.stdout.readline()
            assert line, "serve exited before it was ready"
            if line.startswith("API key"):
                key = line.split()[-1]
        base, headers = f"http://127.0.0.1:{port}", {"X-API-Key": key}
        wait_for(lambda: httpx.get(f"{base}/readyz").json()["status"] == "ready", timeout_s=60)
        worker = next(
            c for c in _children(proc.pid) if "worker" in Path(f"/proc/{c}/cmdline").read_text()
        )
        os.kill(worker, signal.SIGKILL)
        r = httpx.post(
            f"{base}/v1/adapters",
            files={"file": ("a.safetensors", peft_adapter(52))},
            headers=headers,
        )
        assert r.status_code == 202, r.text  # the API did not go down with its worker
        status_url = r.json()["status_url"]
        wait_for(
            lambda: httpx.get(status_url, headers=headers).json()["status"] == "finished",
            timeout_s=180,  # a new worker loads torch first: ~25 s on a busy machine
        )
        assert proc.poll() is None
        assert len(_children(proc.pid)) == 3  # redis, api and the new worker
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        err = proc.stderr.read()
        assert "worker0 exited with status -9 (killed by SIGKILL); restarting in 1 s" in err
        assert "worker0 restarted" in err
    finally:
        _stop(proc)
