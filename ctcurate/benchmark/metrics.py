"""Classification metrics with bootstrap confidence intervals, in numpy (scipy only for a t quantile; no torch).

Owns the numbers a benchmark reports: accuracy, precision, recall (sensitivity), specificity, F1
with COVID as the positive class, F1 under the reference script's convention (NonCOVID positive),
ROC AUC, each with a percentile bootstrap 95% interval, the ROC curve's bootstrap band, the paired
bootstrap of a difference between two models scored on the same test images, and the multi-seed
comparison of two arms (test-image bootstrap and seed-to-seed t interval). Labels are 1 = COVID,
0 = NonCOVID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRIC_NAMES = ("accuracy", "precision", "recall", "specificity", "f1", "f1_reference", "auc")
DEFAULT_THRESHOLD = 0.5
DEFAULT_RESAMPLES = 1000


def _as_arrays(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (NonCOVID) or 1 (COVID)")
    return y, p


def _ratio(num: float, den: float) -> float:
    # sklearn's zero_division default: an undefined ratio counts as 0.
    return float(num / den) if den else 0.0


def roc_auc(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); NaN with one class."""
    y, s = _as_arrays(y_true, score)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank within each run of tied scores.
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y_true: Sequence[int] | np.ndarray, score: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (highest first), with (0, 0) prepended."""
    y, s = _as_arrays(y_true, score)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_run]
    fps = (last_of_run + 1) - tps
    n_pos, n_neg = max(int(y.sum()), 1), max(int(y.size - y.sum()), 1)
    fpr = np.r_[0.0, fps / n_neg]
    tpr = np.r_[0.0, tps / n_pos]
    thresholds = np.r_[np.inf, s[last_of_run]]
    return fpr, tpr, thresholds


def confusion(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, int]:
    """tp/fp/tn/fn with COVID positive; predicted COVID when prob >= threshold."""
    y, p = _as_arrays(y_true, prob)
    pred = p >= threshold
    return {
        "tp": int(np.sum(pred & (y == 1))),
        "fp": int(np.sum(pred & (y == 0))),
        "tn": int(np.sum(~pred & (y == 0))),
        "fn": int(np.sum(~pred & (y == 1))),
    }


def point_metrics(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """Every metric of METRIC_NAMES at one threshold."""
    c = confusion(y_true, prob, threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    # The reference convention: NonCOVID is the positive class.
    return {
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "f1_reference": _ratio(2 * tn, 2 * tn + fn + fp),
        "auc": roc_auc(y_true, prob),
    }


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its percentile bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        return {k: (None if np.isnan(v) else round(float(v), 6)) for k, v in (("value", self.value), ("ci_low", self.low), ("ci_high", self.high))}


def _bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(resamples, n))


def _interval(samples: list[float], level: float) -> tuple[float, float]:
    arr = np.asarray(samples, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(arr, alpha)), float(np.quantile(arr, 1.0 - alpha))


def bootstrap_metrics(
    y_true: Sequence[int] | np.ndarray,
    prob: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Estimate]:
    """Each metric with a bootstrap interval over test images (resampled with replacement)."""
    y, p = _as_arrays(y_true, prob)
    point = point_metrics(y, p, threshold)
    if y.size == 0:
        return {k: Estimate(v, float("nan"), float("nan")) for k, v in point.items()}
    samples: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for idx in _bootstrap_indices(y.size, resamples, seed):
        for k, v in point_metrics(y[idx], p[idx], threshold).items():
            samples[k].append(v)
    return {k: Estimate(point[k], *_interval(samples[k], level)) for k in METRIC_NAMES}


def paired_difference(
    y_true: Sequence[int] | np.ndarray,
    prob_a: Sequence[float] | np.ndarray,
    prob_b: Sequence[float] | np.ndarray,
    threshold: float = DEFAULT_THRESHOLD,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Estimate]:
    """metric(b) - metric(a) on the same test images, with a paired bootstrap interval.

    The same resampled images score both models, so the interval reflects the difference itself,
    not the spread of either model alone.
    """
    y, pa = _as_arrays(y_true, prob_a)
    _, pb = _as_arrays(y_true, prob_b)
    if pa.shape != pb.shape:
        raise ValueError("both models must score the same test images")
    ma, mb = point_metrics(y, pa, threshold), point_metrics(y, pb, threshold)
    full = {k: mb[k] - ma[k] for k in METRIC_NAMES}
    samples: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for idx in _bootstrap_indices(y.size, resamples, seed):
        ma, mb = point_metrics(y[idx], pa[idx], threshold), point_metrics(y[idx], pb[idx], threshold)
        for k in METRIC_NAMES:
            samples[k].append(mb[k] - ma[k])
    return {k: Estimate(full[k], *_interval(samples[k], level)) for k in METRIC_NAMES}


@dataclass(frozen=True)
class SeedComparison:
    """The change of one metric from arm A to arm B, each trained with the same several seeds.

    `change`: the mean over seeds of metric(B, seed) - metric(A, seed), with a paired bootstrap
    interval over test images (the same resampled images score every model). `seed_low`/`seed_high`:
    a Student-t interval of that mean over the per-seed changes (training noise on a fixed test set).
    `significant`: both intervals exclude 0; None with one seed, where training noise is unmeasured.
    """

    change: Estimate
    per_seed: tuple[float, ...]
    seed_sd: float
    seed_low: float
    seed_high: float
    significant: bool | None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.change.as_dict())
        return out | {
            "per_seed": [_rounded(v) for v in self.per_seed],
            "seed_sd": _rounded(self.seed_sd),
            "seed_ci_low": _rounded(self.seed_low),
            "seed_ci_high": _rounded(self.seed_high),
            "significant": self.significant,
        }


def _rounded(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v), 6)


def _excludes_zero(low: float, high: float) -> bool:
    return bool(not np.isnan(low) and (low > 0 or high < 0))


def seed_comparison(
    y_true: Sequence[int] | np.ndarray,
    probs_a: Sequence[np.ndarray],
    probs_b: Sequence[np.ndarray],
    threshold: float = DEFAULT_THRESHOLD,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, SeedComparison]:
    """Arm B against arm A, seed by seed (`probs_a[k]` and `probs_b[k]` share seed k).

    A change counts only when it stands out from both sources of noise: test-set resampling (the
    bootstrap interval) and seed-to-seed training variation (the t interval over seeds).
    """
    from scipy import stats

    if len(probs_a) != len(probs_b) or not probs_a:
        raise ValueError("both arms need the same, non-zero number of seeds")
    y = np.asarray(y_true, dtype=np.int64)
    pas = [np.asarray(p, dtype=np.float64) for p in probs_a]
    pbs = [np.asarray(p, dtype=np.float64) for p in probs_b]

    def mean_change(idx: np.ndarray | slice) -> dict[str, list[float]]:
        per: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
        for pa, pb in zip(pas, pbs):
            ma, mb = point_metrics(y[idx], pa[idx], threshold), point_metrics(y[idx], pb[idx], threshold)
            for k in METRIC_NAMES:
                per[k].append(mb[k] - ma[k])
        return per

    full = mean_change(slice(None))
    boot: dict[str, list[float]] = {k: [] for k in METRIC_NAMES}
    for idx in _bootstrap_indices(y.size, resamples, seed):
        for k, v in mean_change(idx).items():
            boot[k].append(float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan"))
    n = len(pas)
    out = {}
    for k in METRIC_NAMES:
        d = np.asarray(full[k], dtype=np.float64)
        change = Estimate(float(np.mean(d)), *_interval(boot[k], level))
        if n > 1:
            sd = float(np.std(d, ddof=1))
            half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / np.sqrt(n)
            low, high = float(change.value - half), float(change.value + half)
            significant: bool | None = bool(_excludes_zero(change.low, change.high) and _excludes_zero(low, high))
        else:
            sd, low, high, significant = float("nan"), float("nan"), float("nan"), None
        out[k] = SeedComparison(change, tuple(float(v) for v in d), sd, low, high, significant)
    return out


def arm_summary(y_true: Sequence[int] | np.ndarray, probs: Sequence[np.ndarray], threshold: float = DEFAULT_THRESHOLD) -> dict[str, dict[str, object]]:
    """Each metric of one arm over its seeds: the per-seed values, their mean and standard deviation."""
    values = [point_metrics(y_true, p, threshold) for p in probs]
    out: dict[str, dict[str, object]] = {}
    for k in METRIC_NAMES:
        v = np.array([m[k] for m in values], dtype=np.float64)
        out[k] = {
            "mean": round(float(np.mean(v)), 6),
            "sd": round(float(np.std(v, ddof=1)), 6) if len(v) > 1 else None,
            "values": [round(float(x), 6) for x in v],
        }
    return out


def roc_band(
    y_true: Sequence[int] | np.ndarray,
    score: Sequence[float] | np.ndarray,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    points: int = 101,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr grid, low tpr, high tpr): a pointwise bootstrap band around the ROC curve over test images."""
    y, p = _as_arrays(y_true, score)
    grid = np.linspace(0.0, 1.0, points)
    curves = []
    for idx in _bootstrap_indices(y.size, resamples, seed):
        yb = y[idx]
        if yb.min() == yb.max():
            continue  # one class only: no curve
        fpr, tpr, _ = roc_curve(yb, p[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        nan = np.full_like(grid, np.nan)
        return grid, nan, nan
    arr = np.vstack(curves)
    alpha = (1.0 - level) / 2.0
    return grid, np.quantile(arr, alpha, axis=0), np.quantile(arr, 1.0 - alpha, axis=0)
