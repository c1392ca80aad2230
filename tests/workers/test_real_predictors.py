"""Real predictor checkpoints (models.save_predictor) loaded by a real worker: batched predictions,
the verdict they drive, and what ``GET /v1/predictors`` shows."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from harness.inprocess import api_settings, run_worker_burst, running_api, upload, worker_settings
from harness.lora_files import adapter_config, peft_adapter
from harness.profile import AUTH
from lora_io import load_adapter
from workers.resident_worker import VettingWorker
from workers.vetting_pipeline import VetInput, vet_batch
from workers.worker_runtime import WorkerRuntime, load_registry

torch = pytest.importorskip("torch")


def write_predictors(directory: Path, *, harmful_threshold: float) -> None:
    from models import PredictorConfig, build_model, save_predictor

    spec = load_adapter(peft_adapter(0)).spec
    torch.manual_seed(0)
    for task, threshold in (("harmful", harmful_threshold), ("quality", None)):
        model = build_model("gl_net", spec, 1, hidden=4, n_layers=1, head_dim=8, dropout=0.0)
        config = PredictorConfig(
            predictor_id=f"tiny-bert-{task}", version="0.1", task=task, model_name="gl_net", hparams={}, spec=spec,  # type: ignore[arg-type]
            out_features=1, target_mean=[], target_std=[], threshold=threshold, label_names=[task], base_model="tiny-bert",
        )  # fmt: skip
        save_predictor(
            model, directory / config.predictor_id, config, meta={"metrics": {"auroc": 0.5}}
        )


def test_batched_predictions_from_real_checkpoints(tmp_path: Path) -> None:
    write_predictors(tmp_path / "accepting", harmful_threshold=1.0)  # P(harmful) < 1 always
    write_predictors(tmp_path / "rejecting", harmful_threshold=0.0)  # P(harmful) >= 0 always
    items = [VetInput(peft_adapter(s, rank=2 + s), adapter_config(rank=2 + s)) for s in range(3)]
    accepting, _ = load_registry(tmp_path / "accepting", "cpu")
    reports = vet_batch(items, accepting)
    for report in reports:
        assert not isinstance(report, Exception)
        assert [p.predictor_id for p in report.predictions] == [
            "tiny-bert-harmful",
            "tiny-bert-quality",
        ]
        assert (
            0.0 < report.predictions[0].value < 1.0 and report.predictions[0].label == "not_harmful"
        )
        assert report.verdict == "accept", report.reasons
    rejecting, _ = load_registry(tmp_path / "rejecting", "cpu")
    (report,) = vet_batch(items[:1], rejecting)
    assert not isinstance(report, Exception)
    assert report.verdict == "reject" and report.reasons[0].code == "harmful"
    # another base model (other shapes): the predictors do not apply, said plainly
    (other,) = vet_batch([VetInput(peft_adapter(5, hidden=48), adapter_config())], accepting)
    assert not isinstance(other, Exception)
    assert (
        other.predictions == []
        and other.verdict == "review"
        and other.reasons[0].code == "no_predictor"
    )


@pytest.mark.redis
def test_worker_publishes_and_uses_its_predictors(redis_url: str, tmp_path: Path) -> None:
    write_predictors(tmp_path / "predictors", harmful_threshold=1.0)
    store = tmp_path / "store"
    wsettings = worker_settings(redis_url, store, predictor_dir=tmp_path / "predictors")
    with running_api(api_settings(redis_url, store)) as base:
        registry, device = load_registry(wsettings.predictor_dir, "cpu")
        worker = VettingWorker(
            WorkerRuntime(
                wsettings.model_copy(update={"name": "listing-worker"}),
                registry=registry,
                device=device,
            )
        )
        worker.register_birth()  # what `loravet worker` does at start-up
        try:
            listed = httpx.get(f"{base}/v1/predictors", headers=AUTH).json()
            assert listed["workers"] == 1
            assert [(p["predictor_id"], p["task"], p["device"]) for p in listed["predictors"]] == [
                ("tiny-bert-harmful", "harmful", "cpu"), ("tiny-bert-quality", "quality", "cpu"),
            ]  # fmt: skip
            assert (
                listed["predictors"][0]["spec_fingerprint"]
                == load_adapter(peft_adapter(0)).spec.fingerprint
            )
            assert listed["predictors"][0]["metrics"] == {"auroc": 0.5}
            assert httpx.get(f"{base}/readyz").json()["status"] == "ready"
        finally:
            worker.register_death()
        assert httpx.get(f"{base}/v1/predictors", headers=AUTH).json() == {
            "workers": 0,
            "predictors": [],
        }
        assert httpx.get(f"{base}/readyz").status_code == 503
        accepted = upload(base, peft_adapter(7), config=adapter_config()).json()
        run_worker_burst(wsettings)
        report = httpx.get(accepted["report_url"], headers=AUTH).json()
        assert report["verdict"] == "accept"
        assert report["versions"]["predictors"] == [
            "tiny-bert-harmful@0.1",
            "tiny-bert-quality@0.1",
        ]
