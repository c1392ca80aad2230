"""Per-module numbers of an adapter and the SVG plots of the report page, with numpy only.

For every module, with ``U`` (out x r) and ``V`` (in x r) from :mod:`lora_io` so that the weight
delta is ``U V^T``:

* the Frobenius norm ``||U V^T||_F``, by the r x r Gram trick (``tr(U^T U V^T V)``, never the
  dense delta: :func:`lora_io.checks.delta_frobenius_norms`);
* its top singular values: ``U = Q_u R_u`` and ``V = Q_v R_v`` (reduced QR), so
  ``U V^T = Q_u (R_u R_v^T) Q_v^T`` has the singular values of the small ``R_u R_v^T``.

Modules are compared with their peers (the same module in other layers: names with their layer
numbers replaced, as the ``norm_outliers`` check does) by a robust z-score of the log norm; the same
threshold as that check marks a module that stands out.

The SVG is written here as text. Every piece of text that comes from the file (module names,
group names) is escaped, so a hostile name cannot become markup; numbers are formatted by us.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

from lora_io import LoraAdapter, LoraModule
from lora_io.checks import PeerScore, delta_frobenius_norms, module_group, peer_scores

TOP_SINGULAR_VALUES = 8
"""How many singular values per module the report keeps and plots."""

PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#7f6d00", "#3b3b98", "#5f5f5f")
"""Okabe-Ito-like colours for module groups (colour-blind safe, dark enough on white)."""
ODD_COLOUR = "#c0001a"
"""Modules that stand out: also marked by shape and listed in words, never by colour alone."""


@dataclass(frozen=True)
class ModuleSpectrum:
    """The plotted numbers of one module."""

    index: int
    name: str
    group: str
    rank: int
    norm: float
    singular_values: tuple[float, ...]
    """The top singular values of ``U V^T``, largest first."""
    z: float | None = None
    """Robust z-score of the log norm among the module's peers; ``None`` when not compared."""
    log_ratio: float | None = None
    """``log(norm / median norm of its peers)``; ``None`` when not compared."""
    energy: float | None = None
    """The sum of all its squared singular values (``||U V^T||_F^2``, from the SVD)."""

    @property
    def stands_out(self) -> bool:
        """The ``norm_outliers`` check's own rule (:class:`lora_io.checks.PeerScore`)."""
        if self.z is None or self.log_ratio is None:
            return False
        return PeerScore(self.z, self.log_ratio).stands_out

    @property
    def top_share(self) -> float | None:
        """Share of the delta's energy in its top direction, ``s1^2 / sum(s_i^2)``."""
        energy = self.energy if self.energy is not None else self.norm**2
        if not self.singular_values or not energy or energy <= 0:
            return None
        return min(1.0, self.singular_values[0] ** 2 / energy)


def top_singular_values(module: LoraModule, k: int = TOP_SINGULAR_VALUES) -> tuple[float, ...]:
    """The ``k`` largest singular values of ``U V^T``."""
    return tuple(float(s) for s in module.singular_values()[:k])


def module_spectra(adapter: LoraAdapter, k: int = TOP_SINGULAR_VALUES) -> list[ModuleSpectrum]:
    """Norm, top singular values and peer z-score of every module, in file order."""
    norms = [float(n) for n in delta_frobenius_norms(adapter)]
    groups = [module_group(m.name) for m in adapter.modules]
    scores = peer_scores(norms, [m.name for m in adapter.modules])
    out = []
    for i, m in enumerate(adapter.modules):
        values = m.singular_values()
        out.append(
            ModuleSpectrum(
                index=i,
                name=m.name,
                group=groups[i],
                rank=m.rank,
                norm=norms[i],
                singular_values=tuple(float(s) for s in values[:k]),
                z=score.z if (score := scores[i]) is not None else None,
                log_ratio=score.log_ratio if score is not None else None,
                energy=float(np.sum(values**2)) if values.size else None,
            )
        )
    return out


def group_colours(spectra: Sequence[ModuleSpectrum]) -> dict[str, str]:
    """A colour per module group, in order of first appearance (the palette repeats past 8)."""
    colours: dict[str, str] = {}
    for s in spectra:
        if s.group not in colours:
            colours[s.group] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def fmt(x: float | None) -> str:
    """A number for people: three significant digits, plain zero, a dash for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    return f"{x:.3g}"


# ------------------------------------------------------------------------------------- SVG
WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 18, 44
MAX_X_LABELS = 24


@dataclass(frozen=True)
class _Scale:
    """Maps values to y pixels: log10 (decades) or linear from 0 in steps of ``step``."""

    log: bool
    lo: float
    hi: float
    step: float = 0.0

    def y(self, value: float) -> float:
        top, bottom = TOP, HEIGHT - BOTTOM
        if self.log:
            v = math.log10(max(value, self.lo))
            lo, hi = math.log10(self.lo), math.log10(self.hi)
        else:
            v, lo, hi = value, self.lo, self.hi
        frac = 0.0 if hi <= lo else (v - lo) / (hi - lo)
        return bottom - frac * (bottom - top)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = round(math.log10(self.lo)), round(math.log10(self.hi))
            stride = max(1, math.ceil((last - first) / 6))
            return [10.0**e for e in range(first, last + 1, stride)]
        count = round((self.hi - self.lo) / self.step) if self.step > 0 else 0
        return [self.lo + i * self.step for i in range(count + 1)]


LOG_SPAN = 30.0


def _scale(values: Sequence[float], *, force_log: bool = False) -> _Scale:
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return _Scale(log=False, lo=0.0, hi=1.0, step=0.25)
    hi, lo = max(positive), min(positive)
    if force_log or hi / lo > LOG_SPAN:
        lo = max(lo, hi * 1e-6)
        top = math.ceil(math.log10(hi))
        return _Scale(
            log=True,
            lo=10.0 ** math.floor(math.log10(lo)),
            hi=10.0 ** max(top, 1 + math.floor(math.log10(lo))),
        )
    step = nice_step(hi / 5)
    return _Scale(log=False, lo=0.0, hi=math.ceil(hi / step - 1e-9) * step, step=step)


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``raw``."""
    exponent = math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * 10.0**exponent >= raw * (1 - 1e-9):
            return m * 10.0**exponent
    return 10.0 ** (exponent + 1)  # pragma: no cover


def uses_log_scale(values: Sequence[float]) -> bool:
    """Whether the norm plot of these values is drawn on a log scale."""
    return _scale(values).log


NAMED_X_LABELS = 12
"""Up to this many modules, the x axis names them (the end of the name); past it, numbers."""


def short_names(names: Sequence[str]) -> list[str]:
    """Names cut to what tells them apart: with the same number of dotted parts, only the parts
    that differ between modules (``encoder.layer.3.attention.self.value`` -> ``3.value``)."""
    parts = [n.split(".") for n in names]
    if len(names) > 1 and len({len(p) for p in parts}) == 1:
        varying = [i for i in range(len(parts[0])) if len({p[i] for p in parts}) > 1]
        if varying:
            return [".".join(p[i] for i in varying) for p in parts]
    return list(names)


def x_labels(spectra: Sequence[ModuleSpectrum], step: float) -> tuple[list[str | None], bool]:
    """The x tick labels, and whether they are names (few modules) rather than numbers."""
    n = len(spectra)
    if 0 < n <= NAMED_X_LABELS:
        room = max(4, int(step / 7.0))
        names = short_names([s.name for s in spectra])
        return [name if len(name) <= room else "…" + name[-(room - 1) :] for name in names], True
    stride = max(1, math.ceil(n / MAX_X_LABELS))
    return [str(i + 1) if i % stride == 0 else None for i in range(n)], False


def tick_label(value: float) -> str:
    """An axis number: plain between 0.001 and 100000 (``1000``, ``0.25``), else ``1e-05``."""
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.6g}"
    return f"{value:.0e}"


def _axes(scale: _Scale, spectra: Sequence[ModuleSpectrum], step: float, y_label: str) -> list[str]:
    parts = []
    bottom = HEIGHT - BOTTOM
    for t in scale.ticks():
        y = scale.y(t)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d8d8d8" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12" fill="#333">{escape(tick_label(t))}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="#333" stroke-width="1"/>'
        f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="#333" stroke-width="1"/>'
    )
    labels, named = x_labels(spectra, step)
    for i, label in enumerate(labels):
        if label is None:
            continue
        x = LEFT + (i + 0.5) * step
        parts.append(
            f'<text class="x-label" x="{x:.1f}" y="{bottom + 16}" text-anchor="middle" font-size="12" fill="#333">{escape(label)}</text>'
        )
    axis_name = "module" if named else "module # (see the modules table)"
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="12" fill="#333">{axis_name}</text>'
        f'<text x="14" y="{(TOP + bottom) / 2:.0f}" text-anchor="middle" font-size="12" fill="#333" transform="rotate(-90 14 {(TOP + bottom) / 2:.0f})">{escape(y_label)}{" (log)" if scale.log else ""}</text>'
    )
    return parts


def _open_svg(svg_id: str, title: str, desc: str) -> str:
    sid = escape(svg_id)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" id="{sid}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-labelledby="{sid}-title {sid}-desc" preserveAspectRatio="xMidYMid meet" '
        f'font-family="system-ui, sans-serif">'
        f'<title id="{sid}-title">{escape(title)}</title><desc id="{sid}-desc">{escape(desc)}</desc>'
    )


def _odd_summary(spectra: Sequence[ModuleSpectrum]) -> str:
    odd = [s for s in spectra if s.stands_out]
    if not odd:
        return "no module stands out from its peers"
    names = ", ".join(f"#{s.index + 1} {s.name}" for s in odd[:5])
    more = f" and {len(odd) - 5} more" if len(odd) > 5 else ""
    return f"{len(odd)} module(s) stand out from their peers: {names}{more}"


def norm_chart_svg(spectra: Sequence[ModuleSpectrum], svg_id: str = "norm-plot") -> str:
    """Bars of ``||U V^T||_F`` per module, coloured by group; outliers red with a marker."""
    n = len(spectra)
    title = "Norm of each module's weight delta ||U Vᵀ||_F"
    if n == 0:
        return _open_svg(svg_id, title, "the adapter has no modules") + "</svg>"
    colours = group_colours(spectra)
    scale = _scale([s.norm for s in spectra])
    step = (WIDTH - LEFT - RIGHT) / n
    width = max(step * 0.78, 0.6)
    bottom = HEIGHT - BOTTOM
    desc = f"{n} modules; " + _odd_summary(spectra)
    parts = [_open_svg(svg_id, title, desc), *_axes(scale, spectra, step, "||U Vᵀ||_F")]
    for s in spectra:
        x = LEFT + s.index * step + (step - width) / 2
        y = scale.y(s.norm) if s.norm > 0 and math.isfinite(s.norm) else bottom
        odd = s.stands_out
        fill = ODD_COLOUR if odd else colours[s.group]
        label = f"#{s.index + 1} {s.name}: ||U Vᵀ||_F = {fmt(s.norm)}"
        if s.z is not None:
            label += f", z = {s.z:+.1f} among {s.group}"
        if odd:
            label += " (stands out)"
        parts.append(
            f'<g class="bar{" odd" if odd else ""}" data-module="{escape(s.name)}"><title>{escape(label)}</title>'
            f'<rect x="{x:.2f}" y="{y:.2f}" width="{width:.2f}" height="{max(bottom - y, 0.0):.2f}" fill="{fill}"/>'
        )
        if odd:
            cx = x + width / 2
            parts.append(
                f'<path d="M{cx - 6:.1f} {y - 12:.1f} L{cx + 6:.1f} {y - 12:.1f} L{cx:.1f} {y - 3:.1f} Z" fill="{ODD_COLOUR}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def singular_value_chart_svg(spectra: Sequence[ModuleSpectrum], svg_id: str = "sv-plot") -> str:
    """Each module's top singular values as a column of dots (largest darkest), log scale."""
    n = len(spectra)
    title = "Top singular values of each module's weight delta U Vᵀ"
    values = [v for s in spectra for v in s.singular_values]
    if n == 0 or not any(v > 0 for v in values):
        return (
            _open_svg(svg_id, title, "no module has a non-zero singular value")
            + f'<text x="{WIDTH / 2:.0f}" y="{HEIGHT / 2:.0f}" text-anchor="middle" font-size="14" fill="#333">every delta is zero</text></svg>'
        )
    colours = group_colours(spectra)
    scale = _scale(values, force_log=True)
    step = (WIDTH - LEFT - RIGHT) / n
    radius = max(1.2, min(4.0, step * 0.3))
    desc = (
        f"{n} modules, up to {TOP_SINGULAR_VALUES} singular values each; a module whose first value "
        f"towers over the rest concentrates its change in one direction; " + _odd_summary(spectra)
    )
    parts = [_open_svg(svg_id, title, desc), *_axes(scale, spectra, step, "singular value")]
    for s in spectra:
        live = [v for v in s.singular_values if v > 0 and math.isfinite(v)]
        if not live:
            continue
        cx = LEFT + (s.index + 0.5) * step
        colour = ODD_COLOUR if s.stands_out else colours[s.group]
        label = f"#{s.index + 1} {s.name}: σ = " + ", ".join(fmt(v) for v in live)
        if s.top_share is not None:
            label += f"; top direction holds {s.top_share:.0%} of ||U Vᵀ||²"
        parts.append(
            f'<g class="sv{" odd" if s.stands_out else ""}" data-module="{escape(s.name)}"><title>{escape(label)}</title>'
            f'<line x1="{cx:.2f}" x2="{cx:.2f}" y1="{scale.y(live[0]):.2f}" y2="{scale.y(live[-1]):.2f}" stroke="{colour}" stroke-width="1"/>'
        )
        for j, v in enumerate(live):
            opacity = 1.0 if j == 0 else max(0.25, 0.75 - 0.08 * j)
            r = radius if j == 0 else radius * 0.75
            parts.append(
                f'<circle cx="{cx:.2f}" cy="{scale.y(v):.2f}" r="{r:.2f}" fill="{colour}" fill-opacity="{opacity:.2f}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
