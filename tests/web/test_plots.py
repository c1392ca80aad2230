"""The report page's numbers and SVG plots: numpy maths against dense references, escaping."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from harness.lora_files import safetensors_bytes
from lora_io import load_adapter
from lora_io.checks import NORM_OUTLIER_Z, module_group
from service.web.plots import (
    ODD_COLOUR,
    TOP_SINGULAR_VALUES,
    ModuleSpectrum,
    fmt,
    module_spectra,
    norm_chart_svg,
    short_names,
    singular_value_chart_svg,
    tick_label,
    uses_log_scale,
)

SVG = "{http://www.w3.org/2000/svg}"


def adapter_bytes(
    names_shapes: list[tuple[str, int, int, int]],
    seed: int = 0,
    scale_of: dict[str, float] | None = None,
) -> bytes:
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, out_f, in_f, rank in names_shapes:
        s = (scale_of or {}).get(name, 1.0)
        tensors[f"base_model.model.{name}.lora_A.weight"] = rng.normal(size=(rank, in_f)).astype(
            np.float32
        )
        tensors[f"base_model.model.{name}.lora_B.weight"] = (
            rng.normal(size=(out_f, rank)) * 0.1 * s
        ).astype(np.float32)
    return safetensors_bytes(tensors)


def test_norms_and_singular_values_match_the_dense_delta() -> None:
    adapter = load_adapter(
        adapter_bytes([("a.q", 40, 30, 6), ("a.k", 5, 50, 4), ("b.v", 64, 64, 16)])
    )
    spectra = module_spectra(adapter)
    assert [s.name for s in spectra] == [m.name for m in adapter.modules]
    for s, m in zip(spectra, adapter.modules, strict=True):
        dense = m.delta()
        reference = np.linalg.svd(dense, compute_uv=False)
        assert s.norm == pytest.approx(np.linalg.norm(dense), rel=1e-5)  # float32 Grams
        k = min(TOP_SINGULAR_VALUES, len(reference))
        assert len(s.singular_values) == min(k, m.rank, min(dense.shape))
        np.testing.assert_allclose(
            s.singular_values, reference[: len(s.singular_values)], rtol=1e-8
        )
        assert list(s.singular_values) == sorted(s.singular_values, reverse=True)
        assert s.top_share == pytest.approx(reference[0] ** 2 / np.sum(reference**2), rel=1e-8)


def test_an_odd_module_stands_out_among_its_peers() -> None:
    names = [
        (f"encoder.layer.{i}.attention.self.{p}", 24, 16, 4)
        for i in range(8)
        for p in ("query", "value")
    ]
    odd_name = "encoder.layer.5.attention.self.value"
    adapter = load_adapter(adapter_bytes(names, scale_of={odd_name: 300.0}))
    spectra = module_spectra(adapter)
    odd = [s.name for s in spectra if s.stands_out]
    assert odd == [odd_name]
    assert {s.group for s in spectra} == {
        "encoder.layer.#.attention.self.query",
        "encoder.layer.#.attention.self.value",
    }
    z = next(s.z for s in spectra if s.name == odd_name)
    assert z is not None and z > NORM_OUTLIER_Z
    svg = norm_chart_svg(spectra)
    root = ET.fromstring(svg)
    bars = root.findall(f"{SVG}g")
    assert len(bars) == len(spectra)
    marked = [g for g in bars if "odd" in g.get("class", "").split()]
    assert [g.get("data-module") for g in marked] == [odd_name]
    assert marked[0].find(f"{SVG}rect").get("fill") == ODD_COLOUR
    assert marked[0].find(f"{SVG}path") is not None  # a marker, not colour alone
    assert "stand out" in root.find(f"{SVG}desc").text and odd_name in root.find(f"{SVG}desc").text
    sv = ET.fromstring(singular_value_chart_svg(spectra))
    groups = sv.findall(f"{SVG}g")
    assert len(groups) == len(spectra)
    assert all(len(g.findall(f"{SVG}circle")) == 4 for g in groups)  # rank 4: four values each


def test_hostile_module_names_are_escaped_in_the_svg() -> None:
    hostile = '<script>alert("x")</script>&\'"'
    spectra = [
        ModuleSpectrum(
            index=0, name=hostile, group=hostile, rank=2, norm=1.5, singular_values=(1.2, 0.9)
        ),
        ModuleSpectrum(
            index=1,
            name="ok</title><svg onload=alert(1)>",
            group="g",
            rank=2,
            norm=0.5,
            singular_values=(0.4, 0.3),
        ),
    ]
    for svg in (norm_chart_svg(spectra), singular_value_chart_svg(spectra)):
        assert "<script" not in svg and "<svg onload" not in svg
        assert "&lt;script&gt;" in svg
        root = ET.fromstring(svg)  # still well-formed XML
        titles = [t.text for t in root.iter(f"{SVG}title")]
        assert any(hostile in (t or "") for t in titles)  # the text survives, as text
        assert {g.get("data-module") for g in root.findall(f"{SVG}g")} == {s.name for s in spectra}


def test_scales_zero_and_empty_inputs() -> None:
    assert uses_log_scale([1.0, 2.0, 3.0]) is False
    assert uses_log_scale([1e-4, 1.0, 50.0]) is True
    zero = ModuleSpectrum(
        index=1, name="untrained", group="u", rank=2, norm=0.0, singular_values=(0.0, 0.0)
    )
    live = ModuleSpectrum(
        index=0, name="live", group="u", rank=2, norm=2.0, singular_values=(1.9, 0.3)
    )
    svg = norm_chart_svg([live, zero])
    ET.fromstring(svg)
    assert "nan" not in svg.lower()
    ET.fromstring(singular_value_chart_svg([live, zero]))
    empty = singular_value_chart_svg([zero])
    assert "every delta is zero" in empty
    ET.fromstring(empty)
    ET.fromstring(norm_chart_svg([]))
    assert zero.top_share is None
    broken = ModuleSpectrum(
        index=2, name="broken", group="u", rank=2, norm=math.nan, singular_values=()
    )
    for svg in (norm_chart_svg([live, zero, broken]), singular_value_chart_svg([live, broken])):
        values = [v for e in ET.fromstring(svg).iter() for v in e.attrib.values()]
        assert not [v for v in values if "nan" in v.lower()]  # no NaN coordinates


def test_many_modules_keep_the_axis_readable() -> None:
    spectra = [
        ModuleSpectrum(
            index=i,
            name=f"layers.{i}.q",
            group="layers.#.q",
            rank=4,
            norm=1.0 + i % 5,
            singular_values=(1.0, 0.5, 0.2, 0.1),
        )
        for i in range(400)
    ]
    root = ET.fromstring(norm_chart_svg(spectra))
    axis_numbers = [t.text for t in root.findall(f"{SVG}text") if (t.text or "").isdigit()]
    assert 10 <= len(axis_numbers) <= 40  # labelled with a stride, not 400 overlapping labels


def test_number_format() -> None:
    assert (
        fmt(None) == "–" and fmt(0.0) == "0" and fmt(1234.5) == "1.23e+03" and fmt(math.nan) == "–"
    )


def test_axis_labels_name_few_modules_by_what_tells_them_apart() -> None:
    names = [f"encoder.layer.{i}.attention.self.{p}" for i in range(3) for p in ("query", "value")]
    assert short_names(names) == ["0.query", "0.value", "1.query", "1.value", "2.query", "2.value"]
    assert short_names(["fc1", "fc2", "fc3"]) == ["fc1", "fc2", "fc3"]
    assert short_names(["a.b", "a.b.c"]) == ["a.b", "a.b.c"]  # no common layout: whole names
    spectra = [
        ModuleSpectrum(
            index=i, name=n, group=module_group(n), rank=4, norm=1.0 + i, singular_values=(1.0,)
        )
        for i, n in enumerate(names)
    ]
    labels = [
        t.text
        for t in ET.fromstring(norm_chart_svg(spectra)).iter(f"{SVG}text")
        if t.get("class") == "x-label"
    ]
    assert labels == short_names(names)
    assert [tick_label(v) for v in (0, 1000, 0.25, 1e-5, 2e5)] == [
        "0",
        "1000",
        "0.25",
        "1e-05",
        "2e+05",
    ]
