"""`loravet ensemble` and `loravet calibrate` on a real small zoo: the read-out a report prints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lora_io import load_adapter
from lora_io.lora_spec import LoraSpec, ModuleShape
from models.model_catalog import build_model
from models.predictor import Predictor, load_predictor, save_predictor
from training.calibrate_cli import main as calibrate_main
from training.calibrate_cli import raw_outputs
from training.compact_cli import main as compact_main
from training.ensemble_cli import main as ensemble_main
from training.train_cli import main as train_main
from training.zoo_dataset import Zoo, adapter_paths, load_task


def _train(zoo: Path, task: str, seed: int, out: Path) -> Path:
    argv = ["--zoo", str(zoo), "--task", task, "--model", "gl_net", "--epochs", "3"]
    assert (
        train_main([*argv, "--seed", str(seed), "--hparams", '{"hidden": 8}', "--out", str(out)])
        == 0
    )
    return out


def test_ensemble_averages_members_and_calibration_sets_the_read_out(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = [_train(small_zoo, "harmful", s, tmp_path / f"s{s}") for s in (0, 1)]
    out = tmp_path / "ens"
    assert ensemble_main([*map(str, members), "--out", str(out), "--zoo", str(small_zoo)]) == 0
    ens = load_predictor(out)
    assert ens.config.model_name == "gl_net_ensemble" and ens.config.hparams["members"] == 2
    zoo = Zoo.open(small_zoo)
    adapters = [
        load_adapter(f, config=c)
        for f, c in (adapter_paths(zoo, zoo.rows[i]) for i in zoo.ids("test")[:6])
    ]
    logits = [np.log(p / (1 - p)) for p in (load_predictor(m).predict(adapters) for m in members)]
    mean = 1 / (1 + np.exp(-(logits[0] + logits[1]) / 2))
    np.testing.assert_allclose(ens.predict(adapters), mean, atol=1e-6)

    capsys.readouterr()
    assert calibrate_main([str(out), "--zoo", str(small_zoo)]) == 0
    assert "validation LoRAs" in capsys.readouterr().out
    calibrated = load_predictor(out)
    cal = calibrated.config.calibration
    assert cal is not None and cal.review_threshold is not None
    assert calibrated.config.threshold == cal.reject_threshold
    assert cal.review_threshold <= cal.reject_threshold
    raw, _ = raw_outputs(calibrated, zoo, "val")  # calibration is not applied twice
    val = load_task(zoo, "val", "harmful", spec=calibrated.config.spec)
    np.testing.assert_allclose(calibrated.predict(val.batch)[:, 0], cal.probability(raw), atol=1e-9)
    meta = json.loads((out / "meta.json").read_text())
    assert "val split" in meta["calibration"]["fitted_on"]


def test_quality_calibration_and_bad_input(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _train(small_zoo, "quality", 0, tmp_path / "q")
    assert calibrate_main([str(model), "--zoo", str(small_zoo), "--coverage", "0.8"]) == 0
    cal = load_predictor(model).config.calibration
    assert cal is not None and cal.coverage == 0.8 and cal.half_width is not None
    capsys.readouterr()
    assert calibrate_main([str(model), "--zoo", str(small_zoo), "--max-fpr", "2"]) == 2
    assert capsys.readouterr().err.startswith("error: --max-fpr must be in (0, 1)")
    assert calibrate_main([str(tmp_path / "missing"), "--zoo", str(small_zoo)]) == 2
    assert ensemble_main([str(model), "--out", str(tmp_path / "e")]) == 2
    assert "at least 2 members" in capsys.readouterr().err


def test_quality_via_task_reads_quality_through_membership(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.quality_via_task import log_delta_norms, task_features
    from training.via_task_cli import main as via_task_main

    member_dir = tmp_path / "member"
    argv = ["--zoo", str(small_zoo), "--task", "membership", "--model", "gl_net", "--epochs", "3"]
    assert train_main([*argv, "--hparams", '{"hidden": 8}', "--out", str(member_dir)]) == 0
    out = tmp_path / "quality-via-task"
    assert via_task_main([str(member_dir), "--zoo", str(small_zoo), "--out", str(out)]) == 0
    assert "validation R^2" in capsys.readouterr().out
    quality, member = load_predictor(out), load_predictor(member_dir)
    assert quality.config.task == "quality" and quality.config.model_name == "quality_via_task"
    zoo = Zoo.open(small_zoo)
    data = load_task(zoo, "test", "quality", spec=quality.config.spec)
    probs = member.predict(data.batch)
    model = quality.model
    feats = torch.as_tensor(task_features(probs, model.config.pairs))
    if model.config.norm_features:  # the map chose the delta norms too
        norms = log_delta_norms(data.batch).double()
        feats = torch.cat([feats, (norms - model.norm_mean.double()) / model.norm_std.double()], 1)
    if model.trees is not None:
        expected = model.trees(feats).numpy()[:, None]
    else:
        expected = feats.numpy() @ model.ridge_w.double().numpy() + model.ridge_b.double().numpy()
    np.testing.assert_allclose(quality.predict(data.batch), expected, atol=1e-5)
    # given the via-task predictor, it keeps the membership model and fits the same map again
    assert via_task_main([str(out), "--zoo", str(small_zoo), "--out", str(tmp_path / "again")]) == 0
    assert f"quality through {member.config.predictor_id}'s" in capsys.readouterr().out
    again = load_predictor(tmp_path / "again")
    assert again.config.hparams == quality.config.hparams
    np.testing.assert_array_equal(again.predict(data.batch), quality.predict(data.batch))
    assert calibrate_main([str(out), "--zoo", str(small_zoo)]) == 0
    assert load_predictor(out).config.calibration is not None
    harmful = tmp_path / "harmful"
    argv = ["--zoo", str(small_zoo), "--task", "harmful", "--model", "norm_stats", "--epochs", "2"]
    assert train_main([*argv, "--out", str(harmful)]) == 0
    assert via_task_main([str(harmful), "--zoo", str(small_zoo), "--out", str(tmp_path / "x")]) == 2
    assert "needs a membership one" in capsys.readouterr().err
    # a membership predictor of another kind of adapter: named, not a fingerprint mismatch deep inside
    other = LoraSpec((ModuleShape("layers.0.q_proj", 24, 16),))
    small = {"hidden": 4, "head_dim": 8}
    alien = dataclasses.replace(
        member.config, predictor_id="alien", spec=other, base_model="other/base", hparams=small
    )
    model = build_model("gl_net", other, member.config.out_features, **small)
    save_predictor(Predictor(alien, model, {}), tmp_path / "alien")
    assert (
        via_task_main(
            [str(tmp_path / "alien"), "--zoo", str(small_zoo), "--out", str(tmp_path / "y")]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        "alien reads adapters of other/base (1 modules" in err
        and "give the zoo it was trained on" in err
    )


def test_a_family_ensemble_of_gl_net_and_mlp_dense_is_standardised_on_validation_and_calibrates(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gl = _train(small_zoo, "harmful", 0, tmp_path / "gl")
    dense = tmp_path / "dense"
    argv = ["--zoo", str(small_zoo), "--task", "harmful", "--model", "mlp_dense", "--epochs", "3"]
    assert train_main([*argv, "--out", str(dense)]) == 0
    out = tmp_path / "fam"
    assert ensemble_main([str(gl), str(dense), "--out", str(out), "--zoo", str(small_zoo)]) == 0
    ens = load_predictor(out)
    assert ens.config.model_name == "family_ensemble"
    assert [m["family"] for m in ens.config.hparams["members"]] == ["gl_net", "mlp_dense"]
    zoo = Zoo.open(small_zoo)
    val = load_task(zoo, "val", "harmful", spec=ens.config.spec)
    with torch.no_grad():
        z = (ens.model.family_means(val.batch) - ens.model.center[:, None]) / ens.model.scale[
            :, None
        ]
    np.testing.assert_allclose(z.mean(dim=1).numpy(), 0.0, atol=1e-5)  # fitted on val, saved
    assert calibrate_main([str(out), "--zoo", str(small_zoo)]) == 0
    assert load_predictor(out).config.calibration is not None
    capsys.readouterr()
    oalign = tmp_path / "oalign"
    argv[argv.index("mlp_dense")] = "mlp_oalign"
    assert train_main([*argv, "--out", str(oalign)]) == 0
    capsys.readouterr()
    assert (
        ensemble_main([str(gl), str(oalign), "--out", str(tmp_path / "x"), "--zoo", str(small_zoo)])
        == 2
    )
    assert "GL(r)-invariant" in capsys.readouterr().err


def test_seeds_added_to_an_existing_ensemble_give_the_ensemble_of_all_seeds(
    small_zoo: Path, tmp_path: Path
) -> None:
    """A shipped seed ensemble grows by naming it beside the new seeds (it counts as its seeds)."""
    seeds = [_train(small_zoo, "harmful", s, tmp_path / f"s{s}") for s in (0, 1, 2)]
    zoo = ["--zoo", str(small_zoo)]
    assert ensemble_main([str(seeds[0]), str(seeds[1]), "--out", str(tmp_path / "two"), *zoo]) == 0
    assert (
        ensemble_main(
            [str(tmp_path / "two"), str(seeds[2]), "--out", str(tmp_path / "grown"), *zoo]
        )
        == 0
    )
    assert ensemble_main([*map(str, seeds), "--out", str(tmp_path / "all"), *zoo]) == 0
    grown, direct = load_predictor(tmp_path / "grown"), load_predictor(tmp_path / "all")
    assert grown.config.hparams == direct.config.hparams and grown.config.hparams["members"] == 3
    assert grown.config.version == direct.config.version == "ensemble-seed0+seed1+seed2"
    val = load_task(Zoo.open(small_zoo), "val", "harmful", spec=direct.config.spec)
    assert np.array_equal(grown.predict(val.batch), direct.predict(val.batch))


def test_a_token_scan_is_fitted_on_clean_finetunes_and_joins_a_family_ensemble(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = tmp_path / "scan"
    argv = ["--zoo", str(small_zoo), "--task", "harmful", "--model", "token_scan", "--epochs", "1"]
    assert train_main([*argv, "--out", str(scan)]) == 0
    zoo = Zoo.open(small_zoo)
    train = load_task(zoo, "train", "harmful")
    assert 0 < load_predictor(scan).meta["n_train"] == int((train.y[:, 0] == 0).sum()) < len(train)
    gl = _train(small_zoo, "harmful", 0, tmp_path / "gl")
    out = tmp_path / "fam"
    assert ensemble_main([str(gl), str(scan), "--out", str(out), "--zoo", str(small_zoo)]) == 0
    ens = load_predictor(out)
    assert [m["family"] for m in ens.config.hparams["members"]] == ["gl_net", "token_scan"]
    assert calibrate_main([str(out), "--zoo", str(small_zoo)]) == 0
    capsys.readouterr()
    quality = [*argv[:3], "quality", *argv[4:], "--out", str(tmp_path / "q")]
    assert train_main(quality) == 2
    assert "token_scan is fitted on clean finetunes: train it with --task harmful" in (
        capsys.readouterr().err
    )


def test_compact_halves_the_weights_keeps_the_verdicts_and_records_the_change(
    small_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = _train(small_zoo, "harmful", 0, tmp_path / "h")
    zoo = Zoo.open(small_zoo)
    val = load_task(zoo, "val", "harmful", spec=load_predictor(model).config.spec)
    before = load_predictor(model).predict(val.batch)
    size = (model / "model.safetensors").stat().st_size
    capsys.readouterr()
    assert compact_main([str(model), "--zoo", str(small_zoo)]) == 0
    assert "parameters stored as float16" in capsys.readouterr().out
    assert (model / "model.safetensors").stat().st_size < 0.6 * size
    compacted = load_predictor(model)
    assert all(p.dtype == torch.float32 for p in compacted.model.parameters())
    after = compacted.predict(val.batch)
    np.testing.assert_allclose(after, before, atol=5e-3)
    record = json.loads((model / "meta.json").read_text())["compacted"]
    assert record["parameters_dtype"] == "float16" and record["val_loras"] == len(val)
    assert 0 <= record["max_val_output_change"] < 0.05
    assert calibrate_main([str(model), "--zoo", str(small_zoo)]) == 0  # calibrates as before
    capsys.readouterr()
    assert compact_main([str(model)]) == 2
    assert "already stored as" in capsys.readouterr().err
    assert compact_main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
