"""PredictorRegistry: loads every checkpoint once, matches by spec, skips broken ones with a warning."""

from __future__ import annotations

import logging

import pytest

from models.checkpoint import CONFIG_FILE, CheckpointError
from models.model_catalog import build_model
from models.predictor import PredictorConfig, save_predictor
from models.registry import PredictorRegistry


def save(directory, spec, predictor_id, task="harmful", model_name="gl_net", hparams=None):
    hparams = hparams or ({"hidden": 4, "head_dim": 8} if model_name == "gl_net" else {})
    model = build_model(model_name, spec, 1, **hparams)
    config = PredictorConfig(
        predictor_id=predictor_id,
        version="1",
        task=task,
        model_name=model_name,
        hparams=hparams,
        spec=spec,
        out_features=1,
        target_mean=[],
        target_std=[],
        threshold=0.5,
        label_names=[task],
        base_model="test-base",
    )
    return save_predictor(model, directory, config, meta={})


def test_registry_matches_by_spec_and_skips_broken_checkpoints(
    tmp_path, small_spec, other_spec, caplog
):
    save(tmp_path / "a-harmful", small_spec, "a-harmful")
    save(tmp_path / "a-quality", small_spec, "a-quality", task="quality", model_name="norm_stats")
    save(tmp_path / "b-harmful", other_spec, "b-harmful")
    broken = save(tmp_path / "c-broken", small_spec, "c-broken")
    (broken / CONFIG_FILE).write_text("{")
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "README.md").write_text("not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="models.registry"):
        registry = PredictorRegistry.from_directory(tmp_path)
    assert sorted(p.config.predictor_id for p in registry.all()) == [
        "a-harmful",
        "a-quality",
        "b-harmful",
    ]
    assert [p.config.predictor_id for p in registry.for_spec(small_spec)] == [
        "a-harmful",
        "a-quality",
    ]
    assert [p.config.predictor_id for p in registry.for_spec(other_spec.fingerprint)] == [
        "b-harmful"
    ]
    assert registry.for_spec("0" * 16) == []
    assert set(registry.failures) == {str(broken), str(tmp_path / "empty")}
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(broken) in warned and str(tmp_path / "empty") in warned
    assert registry.get("a-quality").config.task == "quality"
    assert not registry.get("a-harmful").model.training


def test_duplicate_predictor_ids_keep_the_first(tmp_path, small_spec, caplog):
    save(tmp_path / "1", small_spec, "same")
    save(tmp_path / "2", small_spec, "same")
    with caplog.at_level(logging.WARNING, logger="models.registry"):
        registry = PredictorRegistry.from_directory(tmp_path)
    assert len(registry) == 1 and registry.all()[0].directory == tmp_path / "1"
    assert "already registered" in caplog.text


def test_missing_directory_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        PredictorRegistry.from_directory(tmp_path / "nope")
