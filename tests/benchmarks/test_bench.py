"""The benchmark harness: timing rows, memory refusal, staleness keys and the regenerated summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_cli, e3_timing, model_runs, summary, task_ceiling

TINY = {
    "rank": 4,
    "batch_size": 2,
    "repeats": 1,
    "memory_cap_gb": 0.01,
    "sizes": [
        {"name": "tiny", "layers": 2, "d_model": 32},
        {"name": "wide", "layers": 2, "d_model": 1024},
    ],
    "models": {"gl_net": {"hidden": 4}, "mlp_dense": {"hidden": 16}, "mlp_svd": {}},
}


def test_e3_measures_and_refuses_what_would_not_fit() -> None:
    rows = e3_timing.run(TINY)["rows"]
    by = {(r["size"], r["model"]): r for r in rows}
    assert by[("tiny", "gl_net")]["status"] == "ok"
    assert by[("tiny", "gl_net")]["forward_s"] > 0 and by[("tiny", "gl_net")]["read_floor_s"] > 0
    wide_dense = by[("wide", "mlp_dense")]
    assert wide_dense["status"] == "skipped" and "GiB" in wide_dense["reason"]
    assert wide_dense["estimated_bytes"] > 2 * 1024 * 1024 * 16  # at least the dense first layer


def test_results_are_current_only_for_the_same_key(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    key = {"spec": "a", "code": bench_cli.code_hash()}
    assert not bench_cli.is_current(out, key)
    bench_cli.write_result(out, key, {"experiment": "x"})
    assert bench_cli.is_current(out, key)
    assert not bench_cli.is_current(out, {**key, "spec": "b"})
    doc = json.loads(out.read_text())
    assert doc["provenance"]["packages"]["torch"] and "git_sha" in doc["provenance"]


def test_a_model_change_outdates_that_model_only() -> None:
    REPO = bench_cli.REPO
    gl = bench_cli.local_imports(REPO / "models" / "gl_net.py", "models")
    assert REPO / "models" / "gl_layers.py" in gl and REPO / "models" / "lora_batch.py" in gl
    assert REPO / "models" / "dense_mlp.py" not in gl
    dense = bench_cli.local_imports(REPO / "models" / "dense_mlp.py", "models")
    assert REPO / "models" / "gl_layers.py" not in dense
    hashes = {m: bench_cli.model_code_hash(m) for m in ("gl_net", "mlp_dense", "norm_stats")}
    assert len(set(hashes.values())) == 3


def test_results_depend_on_the_training_code_the_cells_run_not_the_clis() -> None:
    training = bench_cli.local_imports(bench_cli.ROOT / "model_runs.py", "training")
    # ``from training import metrics`` is followed like ``from training.metrics import ...``
    assert {p.name for p in training} >= {"train_loop.py", "zoo_dataset.py", "metrics.py"}
    assert not {"train_cli.py", "experiment_settings.py"} & {p.name for p in training}


def test_a_zoo_result_is_outdated_when_its_labels_or_splits_change(tmp_path: Path) -> None:
    assert bench_cli.zoo_hash(tmp_path) is None  # not built
    (tmp_path / "manifest.jsonl").write_text('{"id": "a"}\n')
    (tmp_path / "splits.json").write_text('{"train": ["a"]}')
    first = bench_cli.zoo_hash(tmp_path)
    (tmp_path / "splits.json").write_text('{"test": ["a"]}')
    resplit = bench_cli.zoo_hash(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"id": "b"}\n')
    relabelled = bench_cli.zoo_hash(tmp_path)
    assert len({first, resplit, relabelled}) == 3


def test_summary_regenerates_tables_and_plots(tmp_path: Path) -> None:
    (tmp_path / "e3").mkdir()
    (tmp_path / "e3" / "e3_timing.json").write_text(
        json.dumps({"provenance": {"git_sha": "abc"}, **e3_timing.run(TINY)})
    )
    (tmp_path / "e1").mkdir()
    cell = {"zoo": "digits", "task": "harmful", "model": "gl_net", "provenance": {"git_sha": "abc"},
            "summary": {"auroc": {"mean": 0.8, "std": 0.01}, "tpr_at_1pct_fpr": {"mean": 0.2, "std": 0.05}}}  # fmt: skip
    (tmp_path / "e1" / "digits--harmful--gl_net.json").write_text(json.dumps(cell))
    (tmp_path / "e5").mkdir()
    e5 = {"zoo": "digits", "task": "quality", "model": "gl_net", "oracle": {"r2": 0.5},
          "summary": {"r2": {"mean": 0.4, "std": 0.02}, "membership_accuracy": {"mean": 0.9, "std": 0.0}}}  # fmt: skip
    (tmp_path / "e5" / "digits--quality--gl_net.json").write_text(json.dumps(e5))
    text = summary.write_summary(tmp_path).read_text()
    assert "| gl_net | 0.800 ± 0.010 |" in text
    assert "| digits | gl_net | 0.900 ± 0.000 | 0.400 ± 0.020 | - | 0.500 | - |" in text
    assert "skip (" in text  # the refused mlp_dense at the wide size
    assert (tmp_path / "e3_timing.png").stat().st_size > 1000
    assert "Outdated" not in text
    flagged = summary.write_summary(
        tmp_path, outdated=["e1/digits--harmful--gl_net.json"]
    ).read_text()
    assert "**Outdated results**" in flagged and "`e1/digits--harmful--gl_net.json`" in flagged
    assert "Not checked" not in flagged
    unbuilt = summary.write_summary(tmp_path, unchecked={"digits": 2}).read_text()
    assert "**Not checked against their zoo**" in unbuilt and "digits (2 result(s)" in unbuilt


def test_goals_table_names_the_best_model_and_the_gap_to_each_goal() -> None:
    def cell(zoo: str, task: str, model: str, **metrics: tuple[float, float]) -> dict:
        summary_ = {k: {"mean": m, "std": sd} for k, (m, sd) in metrics.items()}
        return {"zoo": zoo, "task": task, "model": model, "summary": summary_}

    rows = summary.goals_table([
        cell("minilm-topics", "harmful", "gl_net", auroc=(0.93, 0.01), tpr_at_1pct_fpr=(0.6, 0.05)),
        cell("minilm-topics", "harmful", "mlp", auroc=(0.94, 0.005), tpr_at_1pct_fpr=(0.3, 0.05)),
        cell("digits", "quality", "gl_net", r2=(0.5, 0.01)),
        cell("digits", "quality", "mlp_oalign", r2=(0.6, 0.01)),
    ])  # fmt: skip
    assert (
        "| digits / quality (r2) | mlp_oalign 0.600 ± 0.010 | 0.500 ± 0.010 | behind (-0.100) | >= 0.8 | missed by 0.300 |"
        in rows
    )
    assert (
        "| minilm-topics / harmful (auroc) | mlp 0.940 ± 0.005 | 0.930 ± 0.010 | tied (-0.010) | >= 0.95 | missed by 0.020 |"
        in rows
    )
    assert any(
        r.startswith("| minilm-topics / harmful (tpr_at_1pct_fpr) | gl_net") and "| best |" in r
        for r in rows
    )


@pytest.fixture
def two_model_bench(small_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """E1 and E2 specs of two tiny models on the small zoo, wired into ``bench_cli``; the results
    folder they write to is returned."""
    experiments, results = tmp_path / "experiments", tmp_path / "results"
    experiments.mkdir()
    train = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "patience": 2}
    models = {
        "norm_stats": {"hparams": {}},
        "gl_net": {"hparams": {"hidden": 4, "n_layers": 1, "head_dim": 8}},
    }
    e1 = {
        "zoos": {"digits": str(small_zoo)},
        "tasks": ["harmful"],
        "seeds": [0],
        "train": train,
        "models": models,
    }
    e2 = {**{k: v for k, v in e1.items() if k != "models"}, "models_from": "e1.json",
          "train_split": "rank_generalisation/train", "val_split": "rank_generalisation/val", "test_ranks": [1, 4]}  # fmt: skip
    (experiments / "e1.json").write_text(json.dumps(e1))
    (experiments / "e2.json").write_text(json.dumps(e2))
    monkeypatch.setattr(bench_cli, "EXPERIMENTS", experiments)
    monkeypatch.setattr(bench_cli, "RESULTS", results)
    monkeypatch.setattr(bench_cli, "MODEL_EXPERIMENTS", {"e1": "e1.json", "e2": "e2.json"})
    return results


def test_bench_runs_missing_cells_once_gl_net_first(two_model_bench: Path) -> None:
    results = two_model_bench
    bench_cli.run_model_experiments(["e1", "e2"], jobs=1)
    written = sorted(results.glob("*/*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert [p.relative_to(results).as_posix() for p in written] == [
        "e1/digits--harmful--gl_net.json",  # the slow model first, across experiments
        "e2/digits--harmful--gl_net.json",
        "e1/digits--harmful--norm_stats.json",
        "e2/digits--harmful--norm_stats.json",
    ]
    e2_result = json.loads((results / "e2" / "digits--harmful--gl_net.json").read_text())
    assert (
        e2_result["experiment"] == "e2" and 0.0 <= e2_result["summary"]["4"]["auroc"]["mean"] <= 1.0
    )
    assert not list(results.glob("tmp/**/*.json"))  # no seed progress left once a cell is written
    stamps = [p.stat().st_mtime_ns for p in written]
    bench_cli.run_model_experiments(["e1", "e2"], jobs=1)  # all current: nothing reruns
    assert [p.stat().st_mtime_ns for p in written] == stamps
    assert bench_cli.outdated_results() == []


def test_bench_runs_only_the_models_asked_for(
    two_model_bench: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = two_model_bench
    bench_cli.run_model_experiments(["e1"], jobs=1, models={"norm_stats"})
    assert [p.name for p in results.glob("*/*.json")] == ["digits--harmful--norm_stats.json"]
    with pytest.raises(SystemExit) as exit_:
        bench_cli.run_model_experiments(["e1"], jobs=1, models={"gl-net"})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "['gl-net']" in err and "models: gl_net, norm_stats" in err


def test_an_interrupted_cell_resumes_from_its_finished_seeds(
    small_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {"seeds": [0, 1],
            "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.0, "patience": 3},
            "models": {"norm_stats": {"hparams": {}}}}  # fmt: skip
    path, key = tmp_path / "seeds.json", {"spec": "s", "zoo": "z", "code": "c"}
    whole = model_runs.run_e1_cell(str(small_zoo), "harmful", "norm_stats", spec)
    real_fit, fits = model_runs.fit, []

    def fit_then_die(config: model_runs.TrainConfig, *args: object) -> object:
        if config.seed == 1:  # the session ends during the second seed
            raise KeyboardInterrupt
        fits.append(config.seed)
        return real_fit(config, *args)

    monkeypatch.setattr(model_runs, "fit", fit_then_die)
    with pytest.raises(KeyboardInterrupt):
        model_runs.run_e1_cell(str(small_zoo), "harmful", "norm_stats", spec,
                               model_runs.SeedProgress(path, key))  # fmt: skip
    assert fits == [0] and path.is_file()

    def counted_fit(config: model_runs.TrainConfig, *args: object) -> object:
        fits.append(config.seed)
        return real_fit(config, *args)

    monkeypatch.setattr(model_runs, "fit", counted_fit)
    resumed = model_runs.run_e1_cell(
        str(small_zoo), "harmful", "norm_stats", spec, model_runs.SeedProgress(path, key)
    )
    assert fits == [0, 1]  # seed 0 was not trained again
    for got, want in zip(resumed["per_seed"], whole["per_seed"], strict=True):
        assert got["auroc"] == pytest.approx(want["auroc"])
        assert got["best_epoch"] == want["best_epoch"]

    other = model_runs.SeedProgress(path, {**key, "code": "changed"})
    assert other.done == {}  # another key (spec, zoo or code changed): nothing is reused


def test_ridge_task_map_recovers_a_known_linear_rule() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(200, 5)).astype(float)
    quality = 0.9 - 0.05 * labels.sum(axis=1) - 0.1 * labels[:, 0] * labels[:, 1]
    features, _, predict = model_runs.task_to_quality(
        labels[:150], quality[:150], labels[150:], quality[150:]
    )
    assert features == "labels+pairs"  # the pair term is real, val picks it
    assert np.abs(predict(labels[150:]) - quality[150:]).max() < 0.01


def test_e5_cell_reads_quality_through_predicted_membership(small_zoo: Path) -> None:
    spec = {"seeds": [0], "stage1_task": "membership",
            "train": {"epochs": 3, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.0, "patience": 3},
            "models": {"norm_stats": {"hparams": {}}}}  # fmt: skip
    out = model_runs.run_e5_cell(str(small_zoo), "quality", "norm_stats", spec)
    seed = out["per_seed"][0]
    assert 0.0 <= seed["membership_accuracy"] <= 1.0 and np.isfinite(seed["r2"])
    assert out["n_test"] > 0 and np.isfinite(out["oracle"]["r2"])
    assert out["summary"]["r2"]["mean"] == seed["r2"]


def test_task_ceiling_reads_only_the_manifest(
    small_zoo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = task_ceiling.ceiling(str(small_zoo))
    assert np.isfinite(result["test_r2"]) and result["alpha"] in model_runs.RIDGE_ALPHAS
    assert task_ceiling.main([str(small_zoo)]) == 0
    assert "task -> quality ceiling: val R^2" in capsys.readouterr().out
    assert task_ceiling.main([str(small_zoo.parent / "no-such-zoo")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_adding_a_zoo_or_model_to_a_spec_leaves_written_cells_current() -> None:
    spec = {"seeds": [0], "zoos": {"a": "zoos/a"}, "models": {"m": {"hparams": {"h": 1}}}}
    grown = {**spec, "zoos": {"a": "zoos/a", "b": "zoos/b"}, "models": {**spec["models"], "n": {}}}
    settings = spec["models"]["m"]

    def key(s: dict) -> str:
        return bench_cli.spec_hash(bench_cli.cell_spec_of(s, "a", "m", settings))

    assert key(spec) == key(grown) == key({**spec, "what": "reworded", "why_note": "new"})
    assert key(spec) != key({**spec, "seeds": [0, 1]})  # a shared field is part of every cell
    assert key(spec) != bench_cli.spec_hash(bench_cli.cell_spec_of(grown, "b", "m", settings))


def test_a_refactor_check_accepts_float_noise_and_nothing_more() -> None:
    from benchmarks.refactor_check import agrees

    stored = {"auroc": 0.8, "threshold": 0.4993722898458059, "n_pos": 52, "train_seconds": 9.0}
    noise = {**stored, "threshold": 0.49937231266317295, "train_seconds": 12.5}
    assert agrees(noise, stored) == []  # float32 rounding and durations are not a change
    moved = {**stored, "auroc": 0.81}
    assert agrees(moved, stored) == ["auroc: 0.81 now, 0.8 stored"]
    assert agrees({k: v for k, v in stored.items() if k != "n_pos"}, stored)  # a metric vanished


def test_a_refactor_check_carries_over_only_what_it_reproduces(
    small_zoo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import refactor_check

    experiments, results = tmp_path / "experiments", tmp_path / "results"
    experiments.mkdir()
    e1 = {
        "zoos": {"digits": str(small_zoo)},
        "tasks": ["harmful"],
        "seeds": [0],
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01, "patience": 2},
        "models": {"norm_stats": {"hparams": {}}},
    }
    (experiments / "e1.json").write_text(json.dumps(e1))
    monkeypatch.setattr(bench_cli, "EXPERIMENTS", experiments)
    monkeypatch.setattr(bench_cli, "RESULTS", results)
    monkeypatch.setattr(bench_cli, "MODEL_EXPERIMENTS", {"e1": "e1.json"})
    monkeypatch.setattr(refactor_check, "MODEL_EXPERIMENTS", {"e1": "e1.json"})
    bench_cli.run_model_experiments(["e1"], jobs=1)
    out = results / "e1" / "digits--harmful--norm_stats.json"
    original = json.loads(out.read_text())

    # a change of code that changes no number: carried over, and the result says how
    monkeypatch.setattr(bench_cli, "model_code_hash", lambda model: "moved-code")
    assert bench_cli.outdated_results() == [out]
    assert refactor_check.verify_refactor() == {"digits/norm_stats": True}
    doc = json.loads(out.read_text())
    assert doc["key"]["code"] == "moved-code" and doc["per_seed"] == original["per_seed"]
    (entry,) = doc["rekeyed"]
    assert entry["from_code"] == original["key"]["code"] and "seed 0 rerun" in entry["verified_by"]
    assert bench_cli.outdated_results() == []

    # a stored number the code does not reproduce: nothing is carried over
    doc["per_seed"][0]["auroc"] = 0.123
    out.write_text(json.dumps(doc))
    monkeypatch.setattr(bench_cli, "model_code_hash", lambda model: "changed-code")
    assert refactor_check.verify_refactor() == {"digits/norm_stats": False}
    assert json.loads(out.read_text())["key"]["code"] == "moved-code"
    assert bench_cli.outdated_results() == [out]
