"""The benchmark's metrics against scikit-learn on fixed inputs, and the bootstrap's promises."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from ctcurate.benchmark import metrics


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=203)
    noisy = np.clip(0.35 * y + rng.random(203) * 0.65, 0, 1)
    tied = np.round(noisy, 1)  # many tied scores
    return [
        (y, noisy),
        (y, tied),
        (np.array([1, 1, 0, 0, 1, 0, 1, 0]), np.array([0.9, 0.4, 0.5, 0.1, 0.5, 0.5, 0.8, 0.7])),
        (np.array([0, 0, 0, 1]), np.array([0.2, 0.2, 0.2, 0.2])),  # constant scores: AUC 0.5
        (np.array([1, 0, 1, 0]), np.array([0.1, 0.2, 0.3, 0.4])),  # nothing predicted positive
    ]


@pytest.mark.parametrize("y, p", _cases())
def test_point_metrics_match_sklearn(y: np.ndarray, p: np.ndarray) -> None:
    pred = (p >= 0.5).astype(int)
    got = metrics.point_metrics(y, p)
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "specificity": skm.recall_score(y, pred, pos_label=0, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "f1_reference": skm.f1_score(y, pred, pos_label=0, zero_division=0),
        "auc": skm.roc_auc_score(y, p),
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert metrics.confusion(y, p) == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}


@pytest.mark.parametrize("y, p", _cases()[:3])
def test_roc_curve_matches_sklearn(y: np.ndarray, p: np.ndarray) -> None:
    fpr, tpr, thr = metrics.roc_curve(y, p)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    assert np.trapezoid(tpr, fpr) == pytest.approx(skm.roc_auc_score(y, p))


def test_auc_with_one_class_is_nan() -> None:
    assert np.isnan(metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded() -> None:
    y, p = _cases()[0]
    a = metrics.bootstrap_metrics(y, p, resamples=300, seed=3)
    b = metrics.bootstrap_metrics(y, p, resamples=300, seed=3)
    c = metrics.bootstrap_metrics(y, p, resamples=300, seed=4)
    assert a == b
    assert a != c
    for name, est in a.items():
        assert est.low <= est.value <= est.high, name
        assert 0 < est.high - est.low < 0.3, name
    assert a["auc"].value == pytest.approx(skm.roc_auc_score(y, p))


def test_bootstrap_interval_narrows_with_more_images() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        y = rng.integers(0, 2, size=n)
        p = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
        est = metrics.bootstrap_metrics(y, p, resamples=300, seed=0)["accuracy"]
        widths.append(est.high - est.low)
    assert widths[1] < widths[0] / 2


def test_paired_difference() -> None:
    y, p = _cases()[0]
    same = metrics.paired_difference(y, p, p, resamples=200)
    assert all(e.value == e.low == e.high == 0 for e in same.values())
    better = np.where(y == 1, np.maximum(p, 0.95), np.minimum(p, 0.05))
    diff = metrics.paired_difference(y, p, better, resamples=200)
    assert diff["accuracy"].value == pytest.approx(1.0 - skm.accuracy_score(y, p >= 0.5))
    assert diff["accuracy"].low > 0  # a clear improvement: the paired interval excludes 0


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        metrics.point_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels must be"):
        metrics.point_metrics([0, 2], [0.1, 0.2])


def _scores(rng: np.random.Generator, y: np.ndarray, skill: float, noise: float) -> np.ndarray:
    """Probabilities that separate the classes by `skill`, blurred by `noise`."""
    return 1 / (1 + np.exp(-(skill * (2 * y - 1) + rng.normal(0, noise, y.size))))


def test_seed_comparison_needs_both_noises_to_be_beaten() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    same = [_scores(rng, y, 1.0, 1.0) for _ in range(4)]
    other = [_scores(rng, y, 1.0, 1.0) for _ in range(4)]  # another draw of the same quality
    worse = [_scores(rng, y, 0.1, 1.0) for _ in range(4)]  # close to chance
    v = metrics.seed_comparison(y, same, other, resamples=300)
    assert not any(c.significant for c in v.values())
    v = metrics.seed_comparison(y, same, worse, resamples=300)
    assert v["auc"].significant is True and v["auc"].change.value < -0.2
    assert v["auc"].change.low <= v["auc"].change.value <= v["auc"].change.high
    assert v["auc"].seed_low <= v["auc"].change.value <= v["auc"].seed_high
    assert v["auc"].change.value == pytest.approx(np.mean(v["auc"].per_seed))


def test_seed_noise_alone_can_veto_a_change() -> None:
    """A change the test bootstrap trusts, but that flips sign from seed to seed, is not significant."""
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 300)
    base = [_scores(rng, y, 1.0, 0.6) for _ in range(3)]
    swings = [_scores(rng, y, s, 0.6) for s in (2.5, 0.4, 1.8)]  # better, much worse, better
    v = metrics.seed_comparison(y, base, swings, resamples=300)["auc"]
    assert v.change.low > 0 or v.change.high < 0  # the test images alone would call it
    assert v.seed_low < 0 < v.seed_high and v.significant is False


def test_one_seed_gives_no_verdict() -> None:
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 50)
    v = metrics.seed_comparison(y, [_scores(rng, y, 1.0, 1.0)], [_scores(rng, y, 0.0, 1.0)], resamples=200)
    assert all(c.significant is None for c in v.values())
    assert v["auc"].as_dict()["seed_sd"] is None and v["auc"].as_dict()["significant"] is None
    with pytest.raises(ValueError):
        metrics.seed_comparison(y, [], [])


def test_roc_band_brackets_the_curve() -> None:
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 80)
    p = _scores(rng, y, 1.0, 1.0)
    grid, low, high = metrics.roc_band(y, p, resamples=300)
    fpr, tpr, _ = metrics.roc_curve(y, p)
    mid = np.interp(grid, fpr, tpr)
    assert np.all(low <= high) and np.mean((low <= mid + 1e-9) & (mid <= high + 1e-9)) > 0.95
    assert 0.05 < float(np.mean(high - low)) < 0.4
