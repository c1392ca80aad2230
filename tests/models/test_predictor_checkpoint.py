"""Checkpoints and the predictor contract: bit-identical round trips, user units, spec errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from lora_io import load_adapter
from models.checkpoint import (
    CONFIG_FILE,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    CheckpointSpecError,
)
from models.lora_batch import LoraBatch
from models.model_catalog import MODEL_CATALOG, build_model, fit_to_data
from models.predictor import Predictor, PredictorConfig, load_predictor, save_predictor
from models.synthetic_loras import random_lora_batch

SMALL_HPARAMS = {
    "gl_net": {"hidden": 8, "head_dim": 16},
    "mlp": {"max_rank": 4, "hidden": 16},
    "mlp_dense": {},
    "mlp_svd": {"max_rank": 4, "hidden": 16},
    "mlp_oalign": {"max_rank": 4, "hidden": 16},
    "transformer": {"max_rank": 4, "d_model": 16, "n_heads": 2, "ff_dim": 16},
    "norm_stats": {},
    "gl_net_ensemble": {"members": 2, "hidden": 4, "head_dim": 8},
    "w2t": {"max_rank": 4, "d_model": 16, "n_heads": 2, "ff_dim": 16},
    "quality_via_task": {
        "inner": "gl_net",
        "inner_hparams": {"hidden": 4, "head_dim": 8},
        "n_labels": 3,
    },
    "family_ensemble": {
        "members": [
            {"family": "gl_net", "model": "gl_net", "hparams": {"hidden": 4, "head_dim": 8}},
            {"family": "gl_net", "model": "gl_net", "hparams": {"hidden": 4, "head_dim": 8}},
            {"family": "mlp_dense", "model": "mlp_dense", "hparams": {}},
        ],
        "weights": [1.0, 0.5],
    },
    "token_scan": {"scan_modules": ["layers.0.q_proj", "layers.1.mlp"]},
}
ONE_SCORE = {"token_scan"}
"""Models that give one harmful score only."""


def make_config(
    spec, model_name="gl_net", task="harmful", out_features=1, **overrides
) -> PredictorConfig:
    values = {
        "predictor_id": f"test-{task}-{model_name}",
        "version": "1",
        "task": task,
        "model_name": model_name,
        "hparams": dict(SMALL_HPARAMS.get(model_name, {})),
        "spec": spec,
        "out_features": out_features,
        "target_mean": [],
        "target_std": [],
        "threshold": 0.5 if task == "harmful" else None,
        "label_names": [f"label{k}" for k in range(out_features)],
        "base_model": "test-base",
    }
    values.update(overrides)
    return PredictorConfig(**values)


def trained_like(name, spec, batch, out_features=2, dtype=torch.float32):
    """A built, data-fitted model in eval mode (fitting sets the buffers a checkpoint must carry)."""
    model = build_model(name, spec, out_features, **SMALL_HPARAMS[name]).to(dtype).eval()
    fit_to_data(model, batch)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(MODEL_CATALOG))
def test_round_trip_gives_bit_identical_outputs(tmp_path, small_spec, name, dtype):
    batch = random_lora_batch(
        small_spec, 4, [[1, 2, 3, 4], [4, 4, 4, 4], [2, 1, 1, 3], [3, 3, 2, 1]], seed=0, dtype=dtype
    )
    outputs, task = (1, "harmful") if name in ONE_SCORE else (2, "membership")
    model = trained_like(name, small_spec, batch, outputs, dtype=dtype)
    config = make_config(small_spec, name, task=task, out_features=outputs)
    save_predictor(
        model, tmp_path / "ckpt", config, meta={"metrics": {"auroc": 0.5}, "git_sha": "abc"}
    )
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        [WEIGHTS_FILE, CONFIG_FILE, META_FILE]
    )
    loaded = load_predictor(tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.equal(model(batch), loaded.model(batch))
    assert (
        loaded.config.hparams
        == json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())["hparams"]
    )
    assert loaded.meta == {"metrics": {"auroc": 0.5}, "git_sha": "abc"}
    assert np.array_equal(Predictor(config, model).predict(batch), loaded.predict(batch))


@pytest.mark.parametrize("name", list(MODEL_CATALOG))
def test_half_stored_parameters_are_computed_in_float32_and_buffers_kept(
    tmp_path, small_spec, name
):
    """Shipped checkpoints store parameters as float16 to halve their bytes: the loaded model must
    compute in float32, keep fitted buffers exactly, and predict what the full-precision model does
    up to float16 rounding."""
    batch = random_lora_batch(
        small_spec, 4, [[1, 2, 3, 4], [4, 4, 4, 4], [2, 1, 1, 3], [3, 3, 2, 1]], seed=0
    )
    outputs, task = (1, "harmful") if name in ONE_SCORE else (2, "membership")
    model = trained_like(name, small_spec, batch, outputs)
    config = make_config(small_spec, name, task=task, out_features=outputs)
    save_predictor(model, tmp_path / "half", config, parameters_dtype=torch.float16)
    stored = load_file(tmp_path / "half" / WEIGHTS_FILE)
    learned = {n for n, _ in model.named_parameters()}
    for key, tensor in stored.items():
        original = model.state_dict()[key]
        if key in learned:
            assert tensor.dtype == torch.float16, key
        else:
            assert tensor.dtype == original.dtype and torch.equal(tensor, original), key
    loaded = load_predictor(tmp_path / "half")
    assert {p.dtype for p in loaded.model.parameters()} <= {torch.float32}
    with torch.no_grad():
        full, half = model(batch), loaded.model(batch)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        save_predictor(model, tmp_path / "x", config, parameters_dtype=torch.float64)


def test_config_json_round_trip_and_fingerprint_check(small_spec):
    config = make_config(
        small_spec,
        "gl_net",
        task="quality",
        out_features=2,
        target_mean=[0.5, 1.0],
        target_std=[2.0, 0.1],
    )
    doc = json.loads(json.dumps(config.to_json()))
    assert doc["spec_fingerprint"] == small_spec.fingerprint
    assert PredictorConfig.from_json(doc) == config
    doc["spec_fingerprint"] = "0" * 16
    with pytest.raises(ValueError, match="does not match its spec"):
        PredictorConfig.from_json(doc)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"task": "toxicity"}, "Invalid task"),
        ({"model_name": "resnet"}, "Invalid model_name"),
        ({"label_names": []}, "Invalid label_names"),
        ({"target_mean": [0.0], "target_std": [0.0]}, "Invalid target_std"),
    ],
)
def test_config_validation(small_spec, overrides, match):
    with pytest.raises(ValueError, match=match):
        make_config(small_spec, **overrides)


def test_predict_returns_user_units(small_spec):
    batch = random_lora_batch(small_spec, 3, 2, seed=1)
    model = trained_like("gl_net", small_spec, batch)
    with torch.no_grad():
        raw = model(batch).double()
    probs = Predictor(make_config(small_spec, task="membership", out_features=2), model).predict(
        batch
    )
    assert probs.shape == (3, 2) and probs.dtype == np.float64
    np.testing.assert_allclose(probs, torch.sigmoid(raw).numpy(), rtol=1e-6)
    quality = make_config(
        small_spec, task="quality", out_features=2, target_mean=[0.5, -1.0], target_std=[2.0, 0.1]
    )
    values = Predictor(quality, model).predict(batch, batch_size=2)  # two chunks
    np.testing.assert_allclose(values, raw.numpy() * [2.0, 0.1] + [0.5, -1.0], rtol=1e-6)


def test_checkpoint_on_another_spec_raises_naming_both_fingerprints(
    tmp_path, small_spec, other_spec
):
    batch = random_lora_batch(small_spec, 2, 2, seed=2)
    save_predictor(
        trained_like("gl_net", small_spec, batch, 1), tmp_path / "c", make_config(small_spec)
    )
    predictor = load_predictor(tmp_path / "c")
    foreign = random_lora_batch(other_spec, 2, 2, seed=3)
    with pytest.raises(CheckpointSpecError, match=small_spec.fingerprint) as err:
        predictor.predict(foreign)
    assert other_spec.fingerprint in str(err.value) and isinstance(err.value, ValueError)


def write_peft_adapter(directory, spec_rows, rank, seed):
    """A real PEFT-layout adapter file (lora_A: (r, in), lora_B: (out, r)) plus adapter_config.json."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, out_f, in_f in spec_rows:
        key = f"base_model.model.{name}"
        tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, in_f)).astype(np.float32)
        tensors[f"{key}.lora_B.weight"] = rng.standard_normal((out_f, rank)).astype(np.float32)
    directory.mkdir()
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank})
    )
    return load_adapter(
        directory / "adapter_model.safetensors", config=directory / "adapter_config.json"
    )


def test_predict_on_loaded_adapter_files(tmp_path):
    rows = [
        ("encoder.layer.0.attention.self.query", 24, 16),
        ("encoder.layer.0.attention.self.value", 24, 16),
    ]
    adapters = [
        write_peft_adapter(tmp_path / f"a{k}", rows, rank, k) for k, rank in enumerate([2, 4, 3])
    ]
    spec = adapters[0].spec
    batch = LoraBatch.from_adapters(adapters)
    save_predictor(trained_like("gl_net", spec, batch, 1), tmp_path / "ckpt", make_config(spec))
    predictor = load_predictor(tmp_path / "ckpt")
    probs = predictor.predict(adapters)
    assert probs.shape == (3, 1) and np.all((probs > 0) & (probs < 1))
    # adapters run in one pass per widest rank, the batch in one pass: equal to round-off
    np.testing.assert_allclose(probs, predictor.predict(batch), rtol=1e-6)
    other = write_peft_adapter(tmp_path / "other", rows[:1], 2, 9)
    with pytest.raises(CheckpointSpecError, match=other.spec.fingerprint):
        predictor.predict([adapters[0], other])
    assert predictor.predict([]).shape == (0, 1)


def test_save_refuses_a_config_that_does_not_describe_the_model(tmp_path, small_spec, other_spec):
    model = build_model("gl_net", small_spec, 1, hidden=8, head_dim=16)
    with pytest.raises(ValueError, match="model_name"):
        save_predictor(model, tmp_path / "a", make_config(small_spec, "mlp"))
    with pytest.raises(CheckpointSpecError):
        save_predictor(model, tmp_path / "b", make_config(other_spec))
    with pytest.raises(ValueError, match="disagree"):
        save_predictor(model, tmp_path / "c", make_config(small_spec, hparams={"hidden": 16}))


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda d: (d / WEIGHTS_FILE).unlink(), "lacks model.safetensors"),
        (lambda d: (d / CONFIG_FILE).write_text("{not json"), "config.json is unreadable"),
        (
            lambda d: (d / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"),
            "model.safetensors is unreadable",
        ),
        (
            lambda d: (d / CONFIG_FILE).write_text(json.dumps({"format": "loravet.checkpoint/1"})),
            "lacks predictor_id",
        ),
    ],
    ids=["missing-weights", "bad-json", "bad-safetensors", "incomplete-config"],
)
def test_broken_checkpoint_raises_naming_the_directory(tmp_path, small_spec, damage, match):
    batch = random_lora_batch(small_spec, 2, 2, seed=4)
    directory = save_predictor(
        trained_like("norm_stats", small_spec, batch, 1),
        tmp_path / "broken",
        make_config(small_spec, "norm_stats"),
    )
    damage(directory)
    with pytest.raises(CheckpointError, match=match) as err:
        load_predictor(directory)
    assert str(directory) in str(err.value)


def test_weights_of_another_architecture_are_refused(tmp_path, small_spec):
    batch = random_lora_batch(small_spec, 2, 2, seed=5)
    directory = save_predictor(
        trained_like("gl_net", small_spec, batch, 1), tmp_path / "c", make_config(small_spec)
    )
    doc = json.loads((directory / CONFIG_FILE).read_text())
    doc["hparams"]["n_layers"] = 3
    (directory / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="Missing key"):
        load_predictor(directory)


def test_predictions_and_evidence_run_without_autograd(small_spec):
    """No graph is built while serving: every forward inside ``predict`` and ``evidence`` runs in
    inference mode (a lost decorator once made serving build autograd graphs unnoticed)."""
    batch = random_lora_batch(small_spec, 3, 2, seed=0)
    seen: list[bool] = []
    for name in ("gl_net", "token_scan"):
        model = trained_like(name, small_spec, batch, 1)
        model.register_forward_hook(lambda *_: seen.append(torch.is_inference_mode_enabled()))
        predictor = Predictor(make_config(small_spec, name), model)
        predictor.predict(batch)
        if name == "token_scan":
            predictor.evidence(batch)
    assert seen == [True, True]  # token_scan's evidence reads its z without a forward pass
