"""leakage.powell: the same steps as scipy.optimize's Powell method, to the bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from ctcurate.leakage.powell import minimize_powell


def _rosenbrock(p: np.ndarray) -> float:
    return float(sum(100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1 - p[:-1]) ** 2))


def _rugged(p: np.ndarray) -> float:
    # many local minima and flat steps, like an image correlation over a warp
    return float(np.sum(np.abs(p - 0.3)) + 0.2 * np.sum(np.sin(7 * p)) + 0.05 * np.floor(4 * p[0]))


def _nan_beyond(p: np.ndarray) -> float:
    return math.nan if p[0] > 2.0 else float(np.sum((p - 1.5) ** 2))


FUNCTIONS = {
    "quadratic": lambda p: float(np.sum((p - np.arange(len(p))) ** 2 * (1 + np.arange(len(p))))),
    "rosenbrock": _rosenbrock,
    "rugged": _rugged,
    "constant": lambda p: 1.0,  # no bracket can be found: the best of its points is kept
    "downhill": lambda p: float(-p[0] - p[1]),  # unbounded: the evaluations run out mid-search
    "nan region": _nan_beyond,
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("x0", [[0.0, 0.0], [1.2, -0.7, 0.4, 3.0], [1.0, 1.0, 0.0, 0.0]])
@pytest.mark.parametrize(("xtol", "ftol", "maxfev"), [(1e-2, 1e-3, 80), (1e-2, 1e-3, 15), (1e-4, 1e-6, 400)])
def test_the_same_minimum_and_point_as_scipy(name, x0, xtol, ftol, maxfev):
    fun = FUNCTIONS[name]
    x0 = np.array(x0)
    with np.errstate(all="ignore"):  # scipy's numpy scalars warn where the bracket overflows
        expected = optimize.minimize(fun, x0, method="Powell", options={"xtol": xtol, "ftol": ftol, "maxfev": maxfev})
    got_fun, got_x = minimize_powell(fun, x0, xtol=xtol, ftol=ftol, maxfev=maxfev)
    assert np.array_equal(got_x, expected.x, equal_nan=True)
    assert got_fun == expected.fun or (math.isnan(got_fun) and math.isnan(expected.fun))


def test_the_evaluation_budget_is_kept():
    calls = []
    minimize_powell(lambda p: calls.append(1) or _rosenbrock(p), np.array([-1.0, 2.0, 0.5]), xtol=1e-6, ftol=1e-9, maxfev=37)
    assert len(calls) == 37
