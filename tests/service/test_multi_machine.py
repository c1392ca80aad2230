"""The multi-machine shape, played on one machine: the API and two workers as separate processes,
each in its own directory with no shared filesystem, sharing only Redis and an S3 bucket (a real
moto server process). The workers load the predictors as a set published to the bucket from a third
"trainer" directory. Uploads of every format reach reports with the right verdicts, and a worker
SIGKILLed in the middle of a batch loses no job: the other worker finishes the batch."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis import Redis

from core.content_store import ContentStoreSettings, open_content_store
from core.predictor_sets import publish_predictor_set
from harness.client import upload, wait_job
from harness.embedded_s3 import EmbeddedS3
from harness.lora_files import (
    diffusers_legacy_lora,
    kohya_lora,
    peft_adapter,
    safetensors_bytes,
    sd15_unet_modules,
    small_diffusers_adapter,
)
from harness.profile import API_KEY, AUTH, settings_env
from harness.stack import ProcessStack, StackConfig
from loravet import SHIPPED_PREDICTORS

pytestmark = pytest.mark.redis

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example(recipe: str, which: str) -> tuple[bytes, bytes]:
    folder = EXAMPLES / recipe / which
    return (folder / "adapter_model.safetensors").read_bytes(), (
        folder / "adapter_config.json"
    ).read_bytes()


def _kohya(seed: int, rank: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_bytes(kohya_lora(sd15_unet_modules(), "lora_unet", rank, float(rank), rng))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_api_and_two_workers_share_only_redis_and_the_bucket(tmp_path: Path) -> None:
    legacy = safetensors_bytes(
        diffusers_legacy_lora(sd15_unet_modules()[:6], 4, np.random.default_rng(5))
    )
    uploads = {  # name: (adapter, config, format, verdict)
        "digits clean (PEFT)": (*_example("digits", "clean"), "peft", "accept"),
        # rejected by the three-seed digits predictor (tests/workers/test_shipped_predictors.py)
        "digits backdoored (PEFT)": (*_example("digits", "backdoored"), "peft", "reject"),
        "minilm clean (PEFT)": (*_example("minilm-topics", "clean"), "peft", "accept"),
        "SmolLM2 clean (PEFT)": (*_example("causal-lm", "clean"), "peft", "accept"),
        "SmolLM2 backdoored (PEFT)": (*_example("causal-lm", "backdoored"), "peft", "reject"),
        "encoder, no config (PEFT)": (peft_adapter(9), None, "peft", "review"),
        "SD 1.5 UNet (kohya)": (_kohya(1, rank=4), None, "kohya", "review"),
        "SD 1.5 UNet (diffusers)": (small_diffusers_adapter(3), None, "diffusers", "review"),
        "SD 1.5 UNet (legacy diffusers)": (legacy, None, "diffusers_legacy", "review"),
    }
    with EmbeddedS3(tmp_path / "s3") as s3:
        store = s3.settings(prefix=f"mm-{uuid.uuid4().hex[:8]}/")
        trainer = ContentStoreSettings(storage_dir=tmp_path / "trainer-host", **store)
        digest, _ = publish_predictor_set(open_content_store(trainer), SHIPPED_PREDICTORS)
        config = StackConfig(
            workers=2,
            separate_hosts=True,
            api_env=settings_env("LORAVET_API_", store),
            worker_env={
                **settings_env("LORAVET_WORKER_", store),
                "LORAVET_WORKER_PREDICTOR_SET": digest,
                "LORAVET_WORKER_BATCH_SIZE": "8",
            },
        )
        with ProcessStack(tmp_path / "stack", config) as stack, httpx.Client() as client:
            stack.wait_workers_registered(2)
            # -- every format reaches a report, with the published predictors' verdicts
            for name, (adapter, adapter_config, fmt, verdict) in uploads.items():
                r = upload(client, stack.url, API_KEY, adapter, adapter_config)
                assert r.status_code == 202, (name, r.text)
                job = wait_job(client, stack.url, API_KEY, r.json()["job_id"], timeout_s=120)
                assert job["status"] == "finished", (name, job)
                report = client.get(r.json()["report_url"], headers=AUTH).json()
                assert (report["format"], report["verdict"]) == (fmt, verdict), name
                if report["predictions"]:
                    assert report["versions"]["predictor_set"] == digest, name

            # -- a worker SIGKILLed mid-batch: the other one finishes every job
            redis = Redis.from_url(stack.redis.url)
            w0, w1 = stack.workers
            assert w0 is not None and w1 is not None
            os.kill(w0.pid, signal.SIGSTOP)
            os.kill(w1.pid, signal.SIGSTOP)
            jobs = []
            for seed in range(8):  # queued while both sleep: worker 0 takes them as one batch
                r = upload(client, stack.url, API_KEY, _kohya(100 + seed))
                assert r.status_code == 202, r.text
                jobs.append(r.json()["job_id"])
            os.kill(w0.pid, signal.SIGCONT)
            deadline = time.monotonic() + 60
            while not (running := stack.jobs_running_on(redis, 0)):
                assert time.monotonic() < deadline, "worker 0 never started the batch"
                time.sleep(0.02)
            stack.kill_worker(0)
            assert len(running) >= 2, running  # it died with a batch in hand
            os.kill(w1.pid, signal.SIGCONT)
            finals = [wait_job(client, stack.url, API_KEY, j, timeout_s=120) for j in jobs]
            assert [f["status"] for f in finals] == ["finished"] * len(jobs), finals
            for job_id in running:
                assert (
                    client.get(f"{stack.url}/v1/jobs/{job_id}", headers=AUTH).json()["status"]
                    == "finished"
                )
            assert stack.crashed() == []
            # the killed "machine" comes back under its name and serves again
            stack.start_worker(0)
            stack.wait_workers_registered(2)
            redis.close()

        # no host kept an upload or a report: only the bucket did; each worker host holds
        # the fetched predictor set and nothing else
        api_host, *worker_hosts = (stack.host_dir(n) for n in ("api", "worker0", "worker1"))
        assert [p for p in _files(api_host) if "store" in p.parts] == []
        for host in worker_hosts:
            kept = {p.relative_to(host / "store").parts[:3] for p in _files(host / "store")}
            assert kept == {("cache", "predictor-sets", digest)}, kept
        listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=store["s3_prefix"])
        names = [o["Key"] for o in listed.get("Contents", [])]
        assert sum("/reports/" in n for n in names) == len(uploads) + len(jobs)
