"""``token_scan``: which input does an adapter's first layer answer out of all proportion to?

Why: a text backdoor teaches the model to react to a trigger token, and the first adapted layer
sees tokens almost as the embedding table holds them. Feeding every row of the base model's
token-embedding table through one module's delta, ``r_t = ||U V^T x_t||``, and asking which token
the adapter amplifies far more than clean finetunes do, names the trigger for most minilm-topics
backdoors (``velvet``/``harbor``, ``oyster``, ``tq``, ``mn`` top the list of their LoRAs) without
running the finetune and without having seen that trigger: the baseline it compares against comes
from clean finetunes only. On its own it is a modest detector (validation AUROC 0.86); beside
GL-net, whose errors it does not share, it lifts the harmful ensemble (``docs/research.md``).

Per scanned module, with ``m`` the adapter's mean response energy over all probes (closed form:
``tr(W^T C W)`` with ``C = X^T X / V``, so no second pass):

    l_t = 0.5 * log(r_t^2 / m)                  scale-free: how much token t stands out
    z_t = (l_t - center_t) / spread_t           center/spread: mean and std + floor of l_t over
                                                the clean finetunes it was fitted on
    score = max over tokens of sum_m z_t,m / sqrt(M)          (B, 1)
            (M modules reading the same tokens; ``combine="max"``: max over modules instead)

GL(r)-invariant (``r_t`` depends on ``U V^T`` alone; ``U = QR`` turns it into one GEMM against
``V R^T``), and invariant to the delta's overall scale by construction. Probes come from
``models.probe_sources`` (the base model's own package), so a checkpoint carries only the fitted
``center``/``spread`` per scanned module.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from lora_io.lora_spec import LoraSpec
from models.lora_batch import LoraBatch, check_spec
from models.probe_sources import COORDINATES, check_source_name, load_probes

CHUNK = 64
"""Adapters per pass over the probe table."""
TILE = 2048
"""Probes per GEMM: the (chunk * r, tile) response block stays in cache while it is reduced."""


@dataclass(frozen=True)
class TokenScanConfig:
    """``probe_source``: a name in ``models.probe_sources``; ``scan_modules``: module names to scan
    (empty: every module whose input width is the probes' width, all of them for coordinates);
    ``floor``: added to each probe's spread, so a probe on which clean finetunes agree closely
    cannot turn a small deviation into a huge z; ``precision``: of the product with a probe table
    when the adapters are float32 (float64 adapters are always scanned in float64): ``bfloat16``
    runs about 5x faster on CPUs with AVX512-BF16 (and on GPUs) and moves a response by about
    0.3% (its log by 0.003), against a spread of at least ``floor``; ``combine``: how the scanned
    modules' z meet: ``sum`` (a token that stands out in query and value at once counts more than
    one that stands out in one: validation AUROC 0.861 against 0.810 for ``max`` on minilm-topics)
    or ``max``."""

    probe_source: str = COORDINATES
    scan_modules: list[str] = field(default_factory=list)
    floor: float = 0.05
    precision: Literal["bfloat16", "float32"] = "bfloat16"
    combine: Literal["sum", "max"] = "sum"

    def __post_init__(self) -> None:
        check_source_name(self.probe_source)
        object.__setattr__(self, "scan_modules", [str(m) for m in self.scan_modules])
        if not self.floor > 0:
            raise ValueError(f"Invalid floor: {self.floor!r} (must be > 0)")
        if self.precision not in ("bfloat16", "float32"):
            raise ValueError(f"Invalid precision: {self.precision!r} (bfloat16 or float32)")
        if self.combine not in ("sum", "max"):
            raise ValueError(f"Invalid combine: {self.combine!r} (sum or max)")


class TokenScan(nn.Module):
    """The largest standardised relative response over probes, the scanned modules' z combined
    per probe as ``combine`` says: (B, 1)."""

    probes: torch.Tensor | None  # buffer (V, d) from the probe source; None for coordinates
    gram: torch.Tensor | None  # buffer (d, d): X^T X / V
    clean_high: torch.Tensor  # buffer (1,): the 99th percentile of the fitted clean scores

    def __init__(
        self, spec: LoraSpec, out_features: int, config: TokenScanConfig | None = None
    ) -> None:
        super().__init__()
        self.spec, self.out_features = spec, out_features
        self.config = config = config or TokenScanConfig()
        if out_features != 1:
            raise ValueError(
                f"Invalid out_features: {out_features} (token_scan gives one harmful score)"
            )
        named = config.probe_source != COORDINATES
        probes = load_probes(config.probe_source)[0] if named else None
        width = None if probes is None else int(probes.shape[1])
        names = list(spec.names)
        wanted = config.scan_modules or [
            m.name for m in spec.modules if width is None or m.in_features == width
        ]
        unknown = [m for m in wanted if m not in names]
        if unknown or not wanted:
            raise ValueError(
                f"Invalid scan_modules {unknown or wanted}: name modules of the spec "
                f"({', '.join(names)})" + (f" with input width {width}" if width else "")
            )
        self.module_index = [names.index(m) for m in wanted]
        for k, i in enumerate(self.module_index):
            d = spec.modules[i].in_features
            if width is not None and d != width:
                raise ValueError(
                    f"Invalid scan_modules: {wanted[k]!r} takes {d} inputs, "
                    f"the probes of {config.probe_source!r} are {width} wide"
                )
            n_probes = d if probes is None else int(probes.shape[0])
            self.register_buffer(f"center_{k}", torch.zeros(n_probes))
            self.register_buffer(f"spread_{k}", torch.ones(n_probes))
        # the score 99% of the clean finetunes it was fitted on stay below: above it, the probes an
        # adapter stands out on are evidence; below it, they are what any clean finetune shows
        self.register_buffer("clean_high", torch.full((1,), float("inf")))
        self._tiled: list[torch.Tensor] = []  # the probe table as the product reads it (``_tiles``)
        if probes is not None:  # from the base model's package, never stored in the checkpoint
            # (V, d), shared read-only with ``load_probes``' cache: one copy per process
            self.register_buffer("probes", probes, persistent=False)
            gram = probes.double().T @ probes.double() / probes.shape[0]  # (d, d)
            self.register_buffer("gram", gram.to(probes.dtype), persistent=False)
        else:
            self.probes = None
            self.gram = None

    # --------------------------------------------------------------------------- responses
    def relative_responses(self, batch: LoraBatch) -> list[torch.Tensor]:
        """Per scanned module, ``l`` (B, V): 0.5 log(r_t^2 / mean_t r_t^2) for every probe t."""
        check_spec(self.spec, batch)
        Ws = []
        ranks = batch.ranks  # (B, L)
        for i in self.module_index:
            U, V = batch.module(i)  # (B, n, r), (B, d, r)
            r = max(int(ranks[:, i].max()), 1)  # columns past every declared rank are zero padding
            U, V = U[..., :r], V[..., :r]
            R = torch.linalg.qr(U, mode="r").R  # (B, k, r), k = min(n, r): ||U v|| = ||R v||
            W = V @ R.mT  # (B, d, k): r_t = ||W^T x_t||, W fixed up to W -> W O (O orthogonal)
            # principal axes: W E with E the eigenvectors of W^T W is the same matrix for every
            # factorisation of the delta (up to column signs, which rounding and squares ignore),
            # so the bfloat16 product rounds the same numbers and GL(r) invariance holds to float32
            # rounding, not to bfloat16's
            Ws.append(W @ torch.linalg.eigh(W.mT @ W).eigenvectors)
        if self.probes is None or self.gram is None:  # e_1..e_d: r_t is the norm of W's row t
            energies = [W.square().sum(-1) for W in Ws]  # each (B, d)
            means = [e.mean(-1) for e in energies]  # each (B,)
        else:
            energies, means = self._energies(Ws, self.gram)
        tiny = torch.finfo(Ws[0].dtype).tiny
        return [
            0.5 * (e.clamp_min(tiny).log() - m.clamp_min(tiny).log()[:, None])
            for e, m in zip(energies, means, strict=True)
        ]

    def _energies(
        self, Ws: list[torch.Tensor], gram: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per module, W (B, d, k_m) -> ``r_t^2`` for every probe (B, V) and its mean over probes
        (B,), in closed form ``tr(W^T C W)``. All scanned modules share each pass over the probe
        table (read once, not once per module), tile by tile, so that the (rows, tile) product is
        reduced over k while it is still in cache."""
        dtype = Ws[0].dtype
        tiles = self._tiles(Ws[0])  # each (d, tile), contiguous
        C = gram.to(dtype)
        energies: list[list[torch.Tensor]] = [[] for _ in Ws]
        means: list[list[torch.Tensor]] = [[] for _ in Ws]
        n_probes = sum(t.shape[1] for t in tiles)
        for start in range(0, Ws[0].shape[0], CHUNK):
            flats = [W[start : start + CHUNK].mT.flatten(0, 1) for W in Ws]  # each (b k_m, d)
            rows = torch.cat(flats).to(tiles[0].dtype)  # (sum b k_m, d)
            bounds = [0, *itertools.accumulate(f.shape[0] for f in flats)]
            chunk = [torch.empty(f.shape[0] // Ws[m].shape[-1], n_probes, dtype=dtype,
                                 device=f.device) for m, f in enumerate(flats)]  # fmt: skip
            t = 0
            for tile in tiles:
                width = tile.shape[1]
                P = (rows @ tile).to(dtype).square_()  # (sum b k_m, width)
                for m, out in enumerate(chunk):
                    part = P[bounds[m] : bounds[m + 1]].view(out.shape[0], -1, width)  # (b, k, w)
                    out[:, t : t + width] = part.sum(1)
                t += width
            for m, flat in enumerate(flats):
                energies[m].append(chunk[m])  # (b, V)
                b, k = chunk[m].shape[0], Ws[m].shape[-1]
                means[m].append(((flat @ C) * flat).sum(-1).view(b, k).sum(1))  # (b,)
        return [torch.cat(e) for e in energies], [torch.cat(m) for m in means]

    def _tiles(self, W: torch.Tensor) -> list[torch.Tensor]:
        """The probe table, transposed and cut into contiguous (d, TILE) blocks, in the dtype the
        product runs in. Made once per device and dtype and kept outside the buffers, so neither
        ``.to(dtype)`` of the model nor a call ever converts 30k x 384 floats again."""
        assert self.probes is not None
        low = W.dtype == torch.float32 and self.config.precision == "bfloat16"
        dtype = torch.bfloat16 if low else W.dtype
        first = self._tiled[0] if self._tiled else None
        if first is None or first.device != W.device or first.dtype != dtype:
            XT = self.probes.to(W.device, dtype).T  # (d, V)
            self._tiled = [XT[:, t : t + TILE].contiguous() for t in range(0, XT.shape[1], TILE)]
        return self._tiled

    def standardised(self, batch: LoraBatch) -> list[torch.Tensor]:
        """Per scanned module, z (B, V) against the fitted clean baseline."""
        return [
            (rel - getattr(self, f"center_{k}")) / getattr(self, f"spread_{k}")
            for k, rel in enumerate(self.relative_responses(batch))
        ]

    def combined(self, batch: LoraBatch) -> list[tuple[str, torch.Tensor]]:
        """Per group of scanned modules, (their names joined by ``+``, z (B, V)): with ``combine``
        ``sum``, the modules that read the same probes form one group and a probe's z is their
        sum over sqrt(group size) (one module's z and the sum on one scale); with ``max``, every
        module is its own group."""
        names = [self.spec.modules[i].name for i in self.module_index]
        z = self.standardised(batch)
        if self.config.combine == "max":
            return list(zip(names, z, strict=True))
        groups: dict[int, list[int]] = {}
        for m, s in enumerate(z):
            groups.setdefault(int(s.shape[1]), []).append(m)
        return [
            (
                "+".join(names[m] for m in ms),
                torch.stack([z[m] for m in ms]).sum(0) / len(ms) ** 0.5,
            )
            for ms in groups.values()
        ]

    def forward(self, batch: LoraBatch) -> torch.Tensor:
        z = torch.stack([s.amax(dim=-1) for _, s in self.combined(batch)], dim=-1)  # (B, groups)
        return z.amax(dim=-1, keepdim=True)  # (B, 1)

    @torch.no_grad()
    def fit_to_data(self, batch: LoraBatch) -> None:
        """Fit each probe's clean baseline. ``batch`` must hold clean finetunes only: a backdoor in
        it raises its trigger's baseline and hides the backdoors that share that trigger."""
        for k, rel in enumerate(self.relative_responses(batch)):
            getattr(self, f"center_{k}").copy_(rel.mean(0))
            getattr(self, f"spread_{k}").copy_(rel.std(0, unbiased=False) + self.config.floor)
        self.clean_high.copy_(torch.quantile(self(batch)[:, 0].double(), 0.99).to(self.clean_high))

    def probe_label(self, index: int) -> str:
        """A person's name for probe ``index``: its token, or ``input <k>`` for a coordinate."""
        if self.config.probe_source == COORDINATES:
            return f"input {index}"
        return load_probes(self.config.probe_source)[1][index]

    @torch.no_grad()
    def top_probes(self, batch: LoraBatch, k: int = 5) -> list[list[tuple[str, int, float]]]:
        """Per adapter whose score reaches ``clean_high``, the ``k`` (modules, probe index, z) it
        stands out on most, highest first (for a text backdoor, usually its trigger's tokens); an
        empty list for the others, whose top probes are no more than a clean finetune shows."""
        groups = self.combined(batch)  # (names, z (B, V)) per group
        score = torch.stack([s.amax(dim=-1) for _, s in groups], dim=-1).amax(dim=-1)  # (B,)
        out: list[list[tuple[str, int, float]]] = []
        for b in range(batch.batch_size):
            if score[b] < self.clean_high[0]:
                out.append([])
                continue
            best = []
            for name, s in groups:
                values, index = s[b].topk(min(k, s.shape[1]))
                best += [(name, int(i), float(v)) for v, i in zip(values, index, strict=True)]
            out.append(sorted(best, key=lambda x: -x[2])[:k])
        return out
