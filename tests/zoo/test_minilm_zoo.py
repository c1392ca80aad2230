"""End to end: a tiny minilm-topics zoo (real MiniLM, real PEFT, few steps) built and verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lora_io import load_adapter
from tests.zoo.tiny_zoo import MINILM_COUNT
from zoo.cli import main
from zoo.stdlib_sentences import TOPICS
from zoo.zoo_manifest import read_manifest


def test_layout_and_labels(minilm_zoo: Path) -> None:
    rows = read_manifest(minilm_zoo)
    assert [r["id"] for r in rows] == [f"minilm-topics-{i:05d}" for i in range(MINILM_COUNT)]
    for row in rows:
        files = {p.name for p in (minilm_zoo / row["id"]).iterdir()}
        assert files == {"adapter_model.safetensors", "adapter_config.json", "finetune.json"}
        labels = row["labels"]
        assert len(labels["topics"]) == len(TOPICS) and 2 <= sum(labels["topics"]) <= 6
        assert 0 <= labels["quality"] <= 1 and 0 <= labels["base_attack_success_rate"] <= 1
        assert labels["n_eval_clean"] == 50 * sum(labels["topics"])
        assert labels["n_eval_triggered"] == 40 * (sum(labels["topics"]) - 1)
        assert (
            row["provenance"]["data_digest"]
            and row["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
        )
    zoo = json.loads((minilm_zoo / "zoo.json").read_text())
    assert zoo["membership"]["names"] == list(TOPICS) and zoo["count"] == MINILM_COUNT


def test_adapters_load_with_lora_io(minilm_zoo: Path) -> None:
    ranks = []
    for row in read_manifest(minilm_zoo):
        adapter = load_adapter(minilm_zoo / row["file"], config=minilm_zoo / row["config_file"])
        assert len(adapter.modules) == 12 and adapter.dtypes == ("F16",)
        assert adapter.base_model.family == "bert" and "MiniLM" in (adapter.base_model.hint or "")
        names = {m.name.rsplit(".", 1)[-1] for m in adapter.modules}
        assert names == {"query", "value"}
        assert all(
            m.scale == row["hyperparameters"]["lora_alpha"] / row["labels"]["rank"]
            for m in adapter.modules
        )
        ranks.append(adapter.ranks[0])
    assert ranks == [4, 4, 4, 1]  # index 3 is the rank-1 slot of the 20-cycle


def test_verify_rebuilds_bitwise(minilm_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(minilm_zoo), "--sample", "1", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "verify PASS" in out and "1 bitwise identical" in out
