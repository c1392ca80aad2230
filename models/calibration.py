"""What turns a predictor's raw output into a verdict a hub can trust, fitted on held-out LoRAs.

Why: a network's sigmoid is not a probability (GL-net trained to convergence is over-confident),
a single threshold makes every unsure case a hard accept or reject, and a quality number with no
error bar (or from a predictor that explains little) reads as more than it is. So every shipped
predictor carries a :class:`Calibration`, fitted on its zoo's validation split (never on test):

- ``harmful``: Platt scaling of the logit (``p = sigmoid(a * logit + b)``); the reject threshold is
  the lowest calibrated probability at which at most ``max_fpr`` of clean validation LoRAs are
  flagged; below it, a review band reaches down to where ``1 - max_miss`` of the harmful ones are
  still caught. Reports state both shares in words.
- ``quality``: a split-conformal interval (the ``coverage`` quantile of absolute validation
  residuals, with the finite-sample correction), and whether the value may decide anything: a
  predictor whose validation R^2 is below :data:`MIN_DECIDING_R2` is shown for information only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MIN_DECIDING_R2 = 0.5
"""Below this validation R^2 a quality predictor informs but never sets the verdict."""

DEFAULT_MAX_FPR = 0.01
DEFAULT_MAX_MISS = 0.05
DEFAULT_COVERAGE = 0.9


@dataclass(frozen=True)
class Calibration:
    """A predictor's fitted read-out (``config.json`` ``calibration``). See the module docstring."""

    task: str
    n_val: int
    platt_a: float = 1.0
    platt_b: float = 0.0
    reject_threshold: float | None = None
    review_threshold: float | None = None
    half_width: float | None = None
    coverage: float | None = None
    val_r2: float | None = None
    decides: bool = True
    operating_point: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("platt_a", "platt_b"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"Invalid {name}: {getattr(self, name)!r} (must be finite)")
        r, v = self.reject_threshold, self.review_threshold
        if r is not None and v is not None and v > r:
            raise ValueError(f"Invalid review_threshold: {v} is above the reject threshold {r}")
        if self.half_width is not None and not self.half_width >= 0:
            raise ValueError(f"Invalid half_width: {self.half_width!r} (must be >= 0)")

    def probability(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from raw logits."""
        return sigmoid(self.platt_a * np.asarray(logits, dtype=np.float64) + self.platt_b)

    def describe(self) -> str:
        """The operating point or the caveat, in words, for reports."""
        op = self.operating_point
        if self.task == "harmful" and op:
            return (
                f"at the reject threshold {self.reject_threshold:.3f}, {op['clean_rejected']:.0%} of "
                f"clean and {op['harmful_rejected']:.0%} of harmful validation LoRAs were flagged; "
                f"from {self.review_threshold:.3f} up (review), {op['harmful_reviewed_or_rejected']:.0%} "
                f"of harmful and {op['clean_reviewed_or_rejected']:.0%} of clean ones "
                f"({self.n_val} validation LoRAs)"
            )
        if self.task == "quality":
            width = (
                f"{self.coverage:.0%} interval +-{self.half_width:.3f}"
                if self.half_width is not None and self.coverage is not None
                else "no interval"
            )
            fit = f"validation R^2 {self.val_r2:.2f}" if self.val_r2 is not None else "R^2 unknown"
            if not self.decides:
                return (
                    f"{fit}: this predictor explains little of measured quality, so its value is "
                    f"shown for information and does not set the verdict ({width})"
                )
            return f"{fit}, {width}"
        return ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Calibration:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"calibration has unknown fields {unknown}")
        return cls(**doc)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow for any finite input."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(q / (1 - q))


def fit_platt(logits: np.ndarray, labels: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """(a, b) minimising the log loss of ``sigmoid(a * logit + b)``: Newton steps with backtracking.

    A tiny L2 penalty towards ``a = 1`` keeps ``a`` finite when validation is separable.
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)  # (n, 2)

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * (w[0] - 1.0) ** 2)

    w = np.array([1.0, 0.0])
    for _ in range(100):
        p = sigmoid(design @ w)
        grad = design.T @ (p - y) / len(y) + l2 * np.array([w[0] - 1.0, 0.0])
        hess = (design * (p * (1 - p))[:, None]).T @ design / len(y) + np.diag([l2, 1e-9])
        step = np.linalg.solve(hess, grad)
        t, current = 1.0, loss(w)
        while loss(w - t * step) > current and t > 1e-6:
            t *= 0.5
        w = w - t * step
        if np.max(np.abs(t * step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


def harmful_thresholds(
    probs: np.ndarray, labels: np.ndarray, max_fpr: float, max_miss: float
) -> tuple[float, float, dict[str, float]]:
    """(reject, review, operating point) on calibrated validation probabilities.

    Reject: the lowest threshold (midway between neighbouring scores) at which at most ``max_fpr``
    of clean LoRAs score at or above it. Review: the highest threshold below which at most
    ``max_miss`` of harmful LoRAs fall, never above the reject threshold.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    clean, harmful = np.sort(p[~y])[::-1], np.sort(p[y])
    allowed_fp = math.floor(max_fpr * len(clean))
    above = (
        clean[allowed_fp] if allowed_fp < len(clean) else -np.inf
    )  # first clean score not allowed
    higher = p[p > above]
    reject = float((above + higher.min()) / 2) if higher.size else float(min(1.0, above + 1e-6))
    allowed_miss = math.floor(max_miss * len(harmful))
    caught_from = harmful[allowed_miss] if allowed_miss < len(harmful) else np.inf
    lower = p[p < caught_from]
    review = float((caught_from + lower.max()) / 2) if lower.size else float(caught_from)
    review = min(review, reject)
    op = {
        "clean_rejected": float(np.mean(p[~y] >= reject)) if (~y).any() else 0.0,
        "harmful_rejected": float(np.mean(p[y] >= reject)) if y.any() else 0.0,
        "clean_reviewed_or_rejected": float(np.mean(p[~y] >= review)) if (~y).any() else 0.0,
        "harmful_reviewed_or_rejected": float(np.mean(p[y] >= review)) if y.any() else 0.0,
    }
    return reject, review, op


def conformal_half_width(predictions: np.ndarray, targets: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ceil((n+1) * coverage)-th smallest absolute residual."""
    residuals = np.sort(np.abs(np.asarray(targets) - np.asarray(predictions)).reshape(-1))
    k = min(len(residuals), math.ceil((len(residuals) + 1) * coverage))
    return float(residuals[k - 1])


def r2_score(predictions: np.ndarray, targets: np.ndarray) -> float:
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    pr = np.asarray(predictions, dtype=np.float64).reshape(-1)
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return 1.0 - float(np.sum((t - pr) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width bins, and the bins (for a reliability plot)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        conf, acc = float(p[mask].mean()), float(y[mask].mean())
        ece += mask.mean() * abs(conf - acc)
        table.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "n": int(mask.sum()),
                "mean_probability": conf,
                "harmful_share": acc,
            }
        )
    return float(ece), table


def fit_calibration(
    task: str,
    raw: np.ndarray,
    targets: np.ndarray,
    *,
    max_fpr: float = DEFAULT_MAX_FPR,
    max_miss: float = DEFAULT_MAX_MISS,
    coverage: float = DEFAULT_COVERAGE,
) -> Calibration:
    """Fit on validation outputs: ``raw`` logits (harmful) or predicted values (quality)."""
    raw = np.asarray(raw, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if task == "harmful":
        if targets.min() == targets.max():
            raise ValueError(
                "calibrating a harmful predictor needs both clean and harmful validation LoRAs"
            )
        a, b = fit_platt(raw, targets)
        cal = Calibration(task, len(raw), platt_a=a, platt_b=b)
        reject, review, op = harmful_thresholds(cal.probability(raw), targets, max_fpr, max_miss)
        return Calibration(
            task, len(raw), platt_a=a, platt_b=b, reject_threshold=reject,
            review_threshold=review, operating_point=op,
        )  # fmt: skip
    if task == "quality":
        if len(raw) < 2:
            raise ValueError("calibrating a quality predictor needs at least 2 validation LoRAs")
        r2 = r2_score(raw, targets)
        return Calibration(
            task, len(raw), half_width=conformal_half_width(raw, targets, coverage),
            coverage=coverage, val_r2=r2, decides=bool(r2 >= MIN_DECIDING_R2),
        )  # fmt: skip
    raise ValueError(f"Invalid task: {task!r} (calibration exists for harmful and quality)")
