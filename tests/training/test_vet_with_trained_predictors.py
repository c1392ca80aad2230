"""`loravet vet` with predictors trained on a real zoo: verdicts, and predictions that do not move
when every module's factors are replaced by (U R, V R^{-T}) and the file is written again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lora_io import load_adapter
from training.train_cli import main as train_main
from training.zoo_dataset import Zoo, adapter_paths
from workers.vet_cli import main as vet_main


@pytest.fixture(scope="module")
def predictors(small_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predictors")
    for task in ("harmful", "quality"):
        argv = [
            "--zoo",
            str(small_zoo),
            "--task",
            task,
            "--model",
            "gl_net",
            "--epochs",
            "3",
            "--out",
            str(root / task),
        ]
        assert train_main(argv) == 0
    return root


def _vet(adapter: Path, config: Path, predictors: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert (
        vet_main([str(adapter), "--config", str(config), "--predictors", str(predictors), "--json"])
        == 0
    )
    return json.loads(capsys.readouterr().out)


def _gl_transformed_copy(src: Path, config: Path, out: Path, seed: int) -> Path:
    """Rewrite a PEFT adapter with every module's (A, B) replaced by an equivalent GL(r) pair."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(src))
    adapter = load_adapter(src, config=config)
    rng = np.random.default_rng(seed)
    for m in adapter.modules:
        r = m.rank
        q, _ = np.linalg.qr(rng.normal(size=(r, r)))
        R = q * np.exp(rng.uniform(-1, 1, size=r))[None, :]
        a_key = next(k for k in tensors if k.endswith(f"{m.name}.lora_A.weight"))
        b_key = a_key.replace("lora_A", "lora_B")
        A = tensors[a_key].astype(np.float64)  # (r, in)
        B = tensors[b_key].astype(np.float64)  # (out, r)
        tensors[b_key] = (B @ R).astype(np.float32)
        tensors[a_key] = (np.linalg.inv(R) @ A).astype(np.float32)  # (V R^{-T})^T = R^{-1} A
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    shutil.copy(config, out / "adapter_config.json")
    return out / "adapter_model.safetensors"


def test_vet_gives_verdicts_and_is_gl_invariant(
    small_zoo: Path, predictors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zoo = Zoo.open(small_zoo)
    held_out = zoo.ids("test") + zoo.ids("val")
    assert held_out
    for lora_id in held_out[:4]:
        file, config = adapter_paths(zoo, zoo.rows[lora_id])
        report = _vet(file, config, predictors, capsys)
        assert report["verdict"] in {"accept", "review", "reject"}
        assert {p["task"] for p in report["predictions"]} == {"harmful", "quality"}
        moved = _gl_transformed_copy(file, config, tmp_path / lora_id, seed=len(lora_id))
        assert moved.read_bytes() != file.read_bytes()
        again = _vet(moved, moved.parent / "adapter_config.json", predictors, capsys)
        before = {p["task"]: p["value"] for p in report["predictions"]}
        after = {p["task"]: p["value"] for p in again["predictions"]}
        for task, value in before.items():
            assert after[task] == pytest.approx(value, rel=1e-3, abs=1e-4), task
        assert again["verdict"] == report["verdict"]
