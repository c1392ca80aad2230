"""Static checks on a loaded adapter, each reported as pass / warn / fail with a plain detail.

They need no predictor and no base model, so every report has them, even for an unknown base model.
Norms use the r x r Gram trick (``||U V^T||_F^2 = tr(U^T U V^T V)``) and never form the dense delta.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from lora_io.lora_adapter import LoraAdapter

Status = Literal["pass", "warn", "fail"]

NORM_OUTLIER_Z = 6.0
"""Robust z-score (median/MAD of log Frobenius norms) above which a module's delta may be an outlier."""

NORM_OUTLIER_RATIO = 8.0
"""...and the factor by which its norm must also differ from its peers' median.

Chosen on the zoos (``loravet bench --only e6`` measures it): with only 6 peers the MAD is small,
so z alone warned on 79 of the 483 clean minilm-topics finetunes (16%; z reached 16.7), while the
largest norm ratio on any clean finetune was 3.2. A module 8x off its peers is still caught (the
tampering this check exists for scales one module by orders of magnitude).
"""

MIN_PEERS = 4
"""Modules of one role (same name but for layer numbers) needed before norms are compared."""

_LAYER_NUMBER = re.compile(r"\.\d+(?=\.|$)")


@dataclass(frozen=True)
class PeerScore:
    """How far a module's delta norm sits from the same module in other layers."""

    z: float
    """Robust z-score of its log norm (median and 1.4826 MAD of the peers, MAD floored at 0.05)."""
    log_ratio: float
    """``log(norm / median norm of the peers)``."""

    @property
    def stands_out(self) -> bool:
        return abs(self.z) > NORM_OUTLIER_Z and abs(self.log_ratio) > np.log(NORM_OUTLIER_RATIO)


def module_group(name: str) -> str:
    """The module's role: its name with layer numbers replaced by ``#`` (``layers.#.q_proj``)."""
    return _LAYER_NUMBER.sub(".#", name)


def peer_scores(norms: Sequence[float], names: Sequence[str]) -> list[PeerScore | None]:
    """A :class:`PeerScore` per module, ``None`` where it has too few live peers to compare.

    Different roles legitimately differ by orders of magnitude (rank, scale, fan-in), so only
    like is compared with like (:func:`module_group`).
    """
    out: list[PeerScore | None] = [None] * len(norms)
    members: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        members.setdefault(module_group(name), []).append(i)
    for idx in members.values():
        live = [i for i in idx if norms[i] > 0]
        if len(live) < MIN_PEERS:
            continue
        logs = np.log(np.asarray([norms[i] for i in live], dtype=np.float64))
        med = float(np.median(logs))
        mad = max(float(np.median(np.abs(logs - med))) * 1.4826, 0.05)
        for i, value in zip(live, logs, strict=True):
            out[i] = PeerScore(z=float((value - med) / mad), log_ratio=float(value - med))
    return out


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def delta_frobenius_norms(adapter: LoraAdapter) -> np.ndarray:
    """``||U_i V_i^T||_F`` per module, via r x r Gram matrices.

    ``||U V^T||_F^2 = sum((U^T U) * (V^T V))``: the Grams are float32 products of the float32
    factors (no float64 copies: about 3x faster on a full SD 1.5 LoRA, relative error ~1e-6, far
    below what the outlier check can notice), summed in float64.
    """
    out = []
    for m in adapter.modules:
        gram_u, gram_v = m.U.T @ m.U, m.V.T @ m.V
        out.append(float(np.sqrt(max(float(np.sum(gram_u * gram_v, dtype=np.float64)), 0.0))))
    return np.asarray(out)


def run_checks(adapter: LoraAdapter) -> list[CheckResult]:
    return [
        _finite(adapter),
        _untrained(adapter),
        _rank_consistency(adapter),
        _norm_outliers(adapter),
        _scale_known(adapter),
    ]


def _finite(adapter: LoraAdapter) -> CheckResult:
    bad = [
        m.name for m in adapter.modules if not (np.isfinite(m.U).all() and np.isfinite(m.V).all())
    ]
    if bad:
        return CheckResult(
            "finite_values", "fail", f"{len(bad)} module(s) hold NaN/Inf, e.g. {bad[0]}"
        )
    return CheckResult("finite_values", "pass", "all factors are finite")


def _untrained(adapter: LoraAdapter) -> CheckResult:
    zero = [m.name for m in adapter.modules if not np.any(m.U)]
    n = len(adapter.modules)
    if len(zero) == n:
        return CheckResult(
            "trained_factors",
            "fail",
            "every B (up) factor is all zero: the adapter changes nothing (untrained)",
        )
    if zero:
        return CheckResult(
            "trained_factors",
            "warn",
            f"{len(zero)} of {n} modules have an all-zero B factor (no change), e.g. {zero[0]}",
        )
    return CheckResult("trained_factors", "pass", f"all {n} modules change their weights")


def _rank_consistency(adapter: LoraAdapter) -> CheckResult:
    ranks = sorted(set(adapter.ranks))
    cfg = adapter.config
    if cfg is not None:
        wrong = [
            (m.name, m.rank, cfg.rank_for(m.name))
            for m in adapter.modules
            if m.rank != cfg.rank_for(m.name)
        ]
        if wrong:
            name, got, want = wrong[0]
            return CheckResult(
                "rank_consistency", "fail",
                f"{len(wrong)} module(s) disagree with adapter_config.json, e.g. {name} has rank {got} but the config says {want}",
            )  # fmt: skip
        return CheckResult("rank_consistency", "pass", f"ranks {ranks} match adapter_config.json")
    if len(ranks) > 1:
        return CheckResult(
            "rank_consistency",
            "warn",
            f"modules use different ranks {ranks} and no config explains why",
        )
    return CheckResult("rank_consistency", "pass", f"all modules have rank {ranks[0]}")


def _norm_outliers(adapter: LoraAdapter) -> CheckResult:
    """Compare each module with the same module in other layers (q_proj with q_proj, ...)."""
    norms = delta_frobenius_norms(adapter)
    scores = peer_scores(list(norms), [m.name for m in adapter.modules])
    compared = sum(1 for sc in scores if sc is not None)
    if not compared:
        return CheckResult("norm_outliers", "pass", "too few modules of one kind to compare norms")
    flagged = [
        (abs(sc.z), i, sc) for i, sc in enumerate(scores) if sc is not None and sc.stands_out
    ]
    if flagged:
        _, worst, score = max(flagged, key=lambda f: f[0])
        m = adapter.modules[worst]
        typical = norms[worst] / float(np.exp(score.log_ratio))
        return CheckResult(
            "norm_outliers", "warn",
            f"{len(flagged)} module(s) have a delta norm at least {NORM_OUTLIER_RATIO:g}x away from the same "
            f"module in other layers, e.g. {m.name} (||dW||={norms[worst]:.3g}, typical {typical:.3g})",
        )  # fmt: skip
    return CheckResult(
        "norm_outliers",
        "pass",
        f"{compared} modules compared with their peers in other layers: no outlier",
    )


def _scale_known(adapter: LoraAdapter) -> CheckResult:
    if adapter.scale_source == "assumed":
        return CheckResult(
            "scale_known", "warn",
            "no adapter_config.json and no alpha in the file: lora_alpha is unknown, scale alpha/r = 1 assumed",
        )  # fmt: skip
    return CheckResult(
        "scale_known", "pass", f"scale from {adapter.scale_source.replace('_', ' ')}"
    )
