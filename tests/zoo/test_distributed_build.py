"""A zoo build spread over RQ: queued with ``loravet zoo build --queue``, built by two ``loravet zoo
worker`` processes in separate directories that share only Redis and an S3 bucket (a real moto
server), one of them SIGKILLed in the middle of a LoRA, and gathered with ``loravet zoo pull``: the
same LoRAs, byte for byte, as the local build of the same indices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis

from core import redis_model
from core.contracts import ZOO_QUEUE
from harness.embedded_s3 import EmbeddedS3
from harness.profile import settings_env
from harness.stack import started_jobs
from tests.zoo.tiny_zoo import DIGITS_COUNT, TINY_SCALE
from zoo.cli import main as zoo_main
from zoo.distributed_build import clear_scratch

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
VARYING = ("timings", "finished_at")
"""finetune.json fields that say when and how fast a LoRA was built, not what it is (and the
labels' ``eval_seconds``)."""


def _worker(name: str, host: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    host.mkdir(parents=True)
    log = (host / "worker.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "loravet.cli", "zoo", "worker", "--name", name],
        env={**env, "LORAVET_WORKER_STORAGE_DIR": str(host / "store")},
        cwd=host,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _lora_files(zoo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(zoo)): p.read_bytes()
        for p in sorted(zoo.glob("digits-*/*"))
        if p.name != "finetune.json"
    }


def _rows(zoo: Path) -> dict[str, dict]:
    rows = {}
    for path in sorted(zoo.glob("digits-*/finetune.json")):
        row = json.loads(path.read_text())
        row["labels"].pop("eval_seconds")
        rows[row["id"]] = {k: v for k, v in row.items() if k not in VARYING}
    return rows


def test_two_workers_one_killed_build_the_same_bytes_as_a_local_build(
    digits_zoo: Path,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [
        "build",
        "--recipe",
        "digits",
        "--count",
        str(DIGITS_COUNT),
        "--steps-scale",
        TINY_SCALE,
    ]
    with EmbeddedS3(tmp_path / "s3") as s3:
        store = s3.settings(prefix=f"zoo-{uuid.uuid4().hex[:8]}/")
        assert zoo_main([*argv, "--queue", redis_url]) == 0
        out = capsys.readouterr().out
        build_id = out.split("zoo build ")[1].split(":")[0]
        assert f"{DIGITS_COUNT} LoRAs queued" in out
        assert zoo_main([*argv, "--queue", redis_url]) == 0  # again: nothing queued twice
        assert (
            f"0 LoRAs queued, {DIGITS_COUNT} already queued or running" in capsys.readouterr().out
        )

        env = {k: v for k, v in os.environ.items() if not k.startswith("LORAVET_")}
        env |= settings_env("LORAVET_WORKER_", store) | {
            "LORAVET_WORKER_REDIS_URL": redis_url,
            "LORAVET_WORKER_EXECUTION_TTL_S": "3",
            "LORAVET_WORKER_MAINTENANCE_INTERVAL_S": "1",
            "PYTHONPATH": str(REPO),
        }
        redis = Redis.from_url(redis_url)
        doomed = _worker("zw0", tmp_path / "host0", env)
        survivor = None
        try:
            deadline = time.monotonic() + 120
            while not (taken := started_jobs(redis, ZOO_QUEUE, "zw0")):
                assert doomed.poll() is None, (tmp_path / "host0" / "worker.log").read_text()
                assert time.monotonic() < deadline, "worker zw0 never started a LoRA"
                time.sleep(0.05)
            survivor = _worker("zw1", tmp_path / "host1", env)
            time.sleep(0.5)
            os.killpg(doomed.pid, signal.SIGKILL)  # in the middle of its LoRA
            doomed.wait(10)
            killed_index = int(taken[0].rsplit("-", 1)[1])
            assert not redis_model.zoo_row_done(redis, build_id, killed_index)

            deadline = time.monotonic() + 240
            while len(redis_model.zoo_rows(redis, build_id)) < DIGITS_COUNT:
                assert survivor.poll() is None, (tmp_path / "host1" / "worker.log").read_text()
                assert time.monotonic() < deadline, "the build did not finish"
                time.sleep(0.2)
        finally:
            for proc in (doomed, survivor):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(60)
        assert survivor.returncode == 0  # a warm stop
        assert "zoo-files" not in {p.name for p in (tmp_path / "host1").rglob("*")}  # no local copy
        # a warm stop clears the worker's scratch; the killed worker's is cleared by the next start
        assert list((tmp_path / "host1" / "store" / "zoo-scratch").iterdir()) == []
        left = list((tmp_path / "host0" / "store" / "zoo-scratch").iterdir())
        assert [p.name.rsplit(".", 1)[1] for p in left] == [str(doomed.pid)]
        assert clear_scratch(tmp_path / "host0" / "store") == left and not left[0].exists()

        for name, value in store.items():
            monkeypatch.setenv(f"LORAVET_WORKER_{name.upper()}", str(value))
        pulled = tmp_path / "pulled"
        pull = ["pull", build_id, "--queue", redis_url, "--out", str(pulled)]
        assert zoo_main([*pull, "--storage", str(tmp_path / "scratch")]) == 0
        assert f"pulled {DIGITS_COUNT} new LoRAs; {DIGITS_COUNT} of {DIGITS_COUNT}" in (
            capsys.readouterr().out
        )
        assert zoo_main([*pull, "--storage", str(tmp_path / "scratch")]) == 0  # resumable
        assert "pulled 0 new LoRAs" in capsys.readouterr().out
        redis.close()

    assert _lora_files(pulled) == _lora_files(digits_zoo)
    assert len(_lora_files(pulled)) == 2 * DIGITS_COUNT
    assert _rows(pulled) == _rows(digits_zoo)
    for shared in ("base/digits-mlp.safetensors", "splits.json"):
        assert (pulled / shared).read_bytes() == (digits_zoo / shared).read_bytes(), shared


def test_pull_and_worker_refuse_bad_input_in_one_line(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = zoo_main(
        ["pull", "digits-000000000000", "--queue", redis_url, "--out", str(tmp_path / "z")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no zoo build 'digits-000000000000'")
    code = zoo_main(
        ["build", "--recipe", "digits", "--count", "2", "--queue", redis_url, "--out", "x"]
    )
    assert code == 2 and "--out is for local builds" in capsys.readouterr().err
    code = zoo_main(["build", "--recipe", "digits", "--count", "2"])
    assert code == 2 and "--out DIR is required" in capsys.readouterr().err
    code = zoo_main(
        ["build", "--recipe", "digits", "--count", "2", "--queue", "redis://127.0.0.1:1/0"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: Redis at redis://127.0.0.1:1/0 does not answer")
    assert err.count("\n") == 1
    import torch

    if not torch.cuda.is_available():
        code = zoo_main(["worker", "--device", "cuda", "--redis-url", redis_url])
        err = capsys.readouterr().err
        assert code == 2 and "--device cuda: torch" in err and "sees no CUDA device" in err
    code = zoo_main(["pull", "x", "--queue", "not-a-url", "--out", str(tmp_path / "z")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: 'not-a-url' is not a Redis URL")
