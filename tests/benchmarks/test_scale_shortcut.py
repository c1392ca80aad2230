"""The shortcut check: module norms match the files' deltas, and a leaked label is named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from benchmarks import scale_shortcut
from training.zoo_dataset import Zoo


def test_module_norms_are_the_frobenius_norms_of_the_files_deltas(small_zoo: Path) -> None:
    zoo = Zoo.open(small_zoo)
    _, norms, ids = scale_shortcut.module_norms(zoo, "all")
    row = zoo.rows[ids[0]]
    config = json.loads((small_zoo / row.id / "adapter_config.json").read_text())
    tensors = load_file(small_zoo / row.file)
    names = sorted(k for k in tensors if k.endswith("lora_A.weight"))
    scale = config["lora_alpha"] / config["r"]
    deltas = [
        scale
        * tensors[k.replace("lora_A", "lora_B")].astype(np.float64)
        @ tensors[k].astype(np.float64)
        for k in names
    ]
    dense = sorted(float(np.linalg.norm(d)) for d in deltas)
    np.testing.assert_allclose(sorted(norms[0]), dense, rtol=1e-5)


def test_a_hyperparameter_that_leaks_the_label_is_named(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaky = tmp_path / "digits"
    shutil.copytree(small_zoo, leaky)
    rows = [json.loads(line) for line in (leaky / "manifest.jsonl").read_text().splitlines()]
    for row in rows:  # as if the recipe drew more steps for its poisoned finetunes
        row["hyperparameters"]["leak"] = 100 + 50 * bool(row["labels"]["harmful"])
    (leaky / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    aurocs = scale_shortcut.shortcut_aurocs(str(leaky))
    assert aurocs["hparam:leak"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in aurocs.values()) and "delta_frobenius_norm" in aurocs
    assert scale_shortcut.main([str(leaky)]) == 0
    assert "furthest from chance: hparam:leak 1.000" in capsys.readouterr().out


def test_a_missing_zoo_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert scale_shortcut.main([str(tmp_path / "no-such-zoo")]) == 2
    assert scale_shortcut.main(["--split"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
