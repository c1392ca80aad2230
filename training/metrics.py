"""Metrics for the three tasks, in plain numpy/scipy so evaluation needs no training code.

- quality (regression): R^2, Kendall tau, MAE;
- harmful (binary): AUROC, TPR at 1% FPR, accuracy at the chosen threshold;
- membership (multi-label): per-label accuracy (mean over samples x labels, as the paper).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def kendall_tau(y: np.ndarray, pred: np.ndarray) -> float:
    if len(y) < 2:
        return float("nan")
    tau = kendalltau(np.asarray(y, float), np.asarray(pred, float)).statistic
    return float(tau) if np.isfinite(tau) else float("nan")


def mae(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(pred, float))))


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) with ties averaged."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):  # average ranks over ties
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) with predictions ``score >= threshold`` positive, thresholds descending."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, float)
    thresholds = np.concatenate([[np.inf], np.unique(score)[::-1]])
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = np.array([(score[y] >= t).sum() / n_pos for t in thresholds])
    fpr = np.array([(score[~y] >= t).sum() / n_neg for t in thresholds])
    return fpr, tpr, thresholds


def tpr_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> float:
    """Highest true-positive rate whose false-positive rate is at most ``max_fpr``.

    With fewer than 1/max_fpr negatives this is the TPR at zero false positives: said in reports.
    """
    fpr, tpr, _ = roc_curve(y, score)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_for_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float) -> float:
    """Lowest threshold keeping the false-positive rate at most ``max_fpr`` (chosen on validation)."""
    fpr, _, thresholds = roc_curve(y, score)
    ok = np.flatnonzero(fpr <= max_fpr)
    t = float(thresholds[ok[-1]])
    return t if np.isfinite(t) else float(np.max(score)) + 1e-9


def best_accuracy_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold that maximises accuracy on the given (validation) scores."""
    y = np.asarray(y).astype(bool)
    candidates = np.unique(np.asarray(score, float))
    accs = [((score >= t) == y).mean() for t in candidates]
    return float(candidates[int(np.argmax(accs))])


def accuracy_at(y: np.ndarray, score: np.ndarray, threshold: float) -> float:
    return float(((np.asarray(score) >= threshold) == np.asarray(y).astype(bool)).mean())


def per_label_accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean over samples x labels of (prob >= 0.5) == y."""
    return float(((np.asarray(prob) >= 0.5) == np.asarray(y).astype(bool)).mean())


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"r2": r2_score(y, pred), "kendall_tau": kendall_tau(y, pred), "mae": mae(y, pred)}


def harmful_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    return {
        "auroc": auroc(y, score),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, score, 0.01),
        "accuracy": accuracy_at(y, score, threshold),
        "threshold": float(threshold),
        "n_pos": int(np.asarray(y).astype(bool).sum()),
        "n_neg": int((~np.asarray(y).astype(bool)).sum()),
    }
