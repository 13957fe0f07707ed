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
