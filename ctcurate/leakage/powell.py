"""Powell's derivative-free minimization, as the pixel alignment of `verify` uses it.

Owns one thing: `minimize_powell`, scipy.optimize's modified Powell method (unit start directions,
Brent line searches started from a golden-section bracket of [0, 1]) for an unbounded function of
a few variables, ported step for step so that it takes the same steps and returns the same bits
(checked against scipy in the tests). Importing scipy.optimize costs half a second of CPU, which
every worker process paid on its first pair; this is all of it the verification needs.
Pure Python and numpy; imports nothing from ctcurate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_GOLD = 1.618034  # bracket growth: the golden ratio
_CG = 0.3819660  # golden-section step of Brent's method
_TINY = 1e-21
_MINTOL = 1.0e-11
_GROW_LIMIT = 110.0
_BRACKET_MAXITER = 1000
_BRENT_MAXITER = 500


class _OutOfEvaluations(Exception):
    """The evaluation budget is spent: the search stops where its last completed step left it."""


def minimize_powell(
    fun: Callable[[np.ndarray], float], x0: np.ndarray, xtol: float, ftol: float, maxfev: int
) -> tuple[float, np.ndarray]:
    """The minimum found of `fun` from `x0`, and where: `scipy.optimize.minimize(fun, x0,
    method="Powell", options={"xtol": xtol, "ftol": ftol, "maxfev": maxfev})`'s `fun` and `x`."""
    calls = 0

    def f(x: np.ndarray) -> float:
        nonlocal calls
        if calls >= maxfev:
            raise _OutOfEvaluations
        calls += 1
        return fun(np.copy(x))

    x = np.atleast_1d(np.asarray(x0)).astype(float).flatten()
    n = len(x)
    direc = np.eye(n, dtype=float)
    fval = f(x)
    x1 = x.copy()
    try:
        while True:
            fx = fval
            bigind = 0
            delta = 0.0
            for i in range(n):
                fx2 = fval
                fval, x, _ = _line_search(f, x, direc[i], xtol * 100, fval)
                if (fx2 - fval) > delta:
                    delta = fx2 - fval
                    bigind = i
            if 2.0 * (fx - fval) <= ftol * (abs(fx) + abs(fval)) + 1e-20:
                break
            if calls >= maxfev:
                break
            if math.isnan(fx) and math.isnan(fval):
                break
            # the extrapolated point along the step this iteration made
            direc1 = x - x1
            x1 = x.copy()
            fx2 = f(x + direc1)
            if fx > fx2:
                t = 2.0 * (fx + fx2 - 2.0 * fval)
                temp = fx - fval - delta
                t *= temp * temp
                temp = fx - fx2
                t -= delta * temp * temp
                if t < 0.0:
                    fval, x, direc1 = _line_search(f, x, direc1, xtol * 100, fval)
                    if np.any(direc1):
                        direc[bigind] = direc[-1]
                        direc[-1] = direc1
    except _OutOfEvaluations:
        pass
    return fval, x


def _line_search(f: Callable[[np.ndarray], float], p: np.ndarray, xi: np.ndarray, tol: float, fval: float) -> tuple[float, np.ndarray, np.ndarray]:
    """The minimum of f(p + alpha * xi) over alpha: (its value, the point, the step taken)."""
    if not np.any(xi):
        return fval, p, xi

    def along(alpha: float) -> float:
        return f(p + alpha * xi)

    alpha, fret = _brent(along, tol)
    step = alpha * xi
    return fret, p + step, step


def _brent(func: Callable[[float], float], tol: float) -> tuple[float, float]:
    """Brent's minimization of `func` inside the bracket grown from [0, 1]; where the bracket
    cannot be found, the best of its three points."""
    found = _bracket(func)
    if len(found) == 2:  # no bracket: its best point
        return found
    xa, xb, xc, fb = found
    x = w = v = xb
    fw = fv = fx = fb
    a, b = (xa, xc) if xa < xc else (xc, xa)
    deltax = 0.0
    rat = 0.0
    for _ in range(_BRENT_MAXITER):
        tol1 = tol * abs(x) + _MINTOL
        tol2 = 2.0 * tol1
        xmid = 0.5 * (a + b)
        if abs(x - xmid) < (tol2 - 0.5 * (b - a)):
            break
        if abs(deltax) <= tol1:
            deltax = a - x if x >= xmid else b - x  # a golden-section step
            rat = _CG * deltax
        else:  # a parabolic step, where it is useful
            tmp1 = (x - w) * (fx - fv)
            tmp2 = (x - v) * (fx - fw)
            p = (x - v) * tmp2 - (x - w) * tmp1
            tmp2 = 2.0 * (tmp2 - tmp1)
            if tmp2 > 0.0:
                p = -p
            tmp2 = abs(tmp2)
            dx_temp = deltax
            deltax = rat
            if (p > tmp2 * (a - x)) and (p < tmp2 * (b - x)) and (abs(p) < abs(0.5 * tmp2 * dx_temp)):
                rat = p * 1.0 / tmp2
                u = x + rat
                if (u - a) < tol2 or (b - u) < tol2:
                    rat = tol1 if xmid - x >= 0 else -tol1
            else:
                deltax = a - x if x >= xmid else b - x
                rat = _CG * deltax
        if abs(rat) < tol1:  # move by at least tol1
            u = x + tol1 if rat >= 0 else x - tol1
        else:
            u = x + rat
        fu = func(u)
        if fu > fx:
            if u < x:
                a = u
            else:
                b = u
            if (fu <= fw) or (w == x):
                v, w, fv, fw = w, u, fw, fu
            elif (fu <= fv) or (v == x) or (v == w):
                v, fv = u, fu
        else:
            if u >= x:
                a = x
            else:
                b = x
            v, w, x, fv, fw, fx = w, x, u, fw, fx, fu
    return x, fx


def _bracket(func: Callable[[float], float]) -> tuple[float, float, float, float] | tuple[float, float]:
    """(xa, xb, xc, f(xb)) with f(xb) below f(xa) and f(xc), grown downhill from [0, 1]; where
    none is found, (x, f(x)) of the best point seen (NaN if any was NaN)."""
    xa, xb = 0.0, 1.0
    fa = func(xa)
    fb = func(xb)
    if fa < fb:  # downhill from a to b
        xa, xb = xb, xa
        fa, fb = fb, fa
    xc = xb + _GOLD * (xb - xa)
    fc = func(xc)
    iterations = 0
    while fc < fb:
        tmp1 = (xb - xa) * (fb - fc)
        tmp2 = (xb - xc) * (fb - fa)
        val = tmp2 - tmp1
        denom = 2.0 * _TINY if abs(val) < _TINY else 2.0 * val
        w = xb - ((xb - xc) * tmp2 - (xb - xa) * tmp1) / denom
        wlim = xb + _GROW_LIMIT * (xc - xb)
        if iterations > _BRACKET_MAXITER:
            raise RuntimeError("no bracket found within the iteration limit")
        iterations += 1
        if (w - xc) * (xb - w) > 0.0:
            fw = func(w)
            if fw < fc:
                xa, xb, fa, fb = xb, w, fb, fw
                break
            if fw > fb:
                xc, fc = w, fw
                break
            w = xc + _GOLD * (xc - xb)
            fw = func(w)
        elif (w - wlim) * (wlim - xc) >= 0.0:
            w = wlim
            fw = func(w)
        elif (w - wlim) * (xc - w) > 0.0:
            fw = func(w)
            if fw < fc:
                xb, xc = xc, w
                w = xc + _GOLD * (xc - xb)
                fb, fc = fc, fw
                fw = func(w)
        else:
            w = xc + _GOLD * (xc - xb)
            fw = func(w)
        xa, xb, xc = xb, xc, w
        fa, fb, fc = fb, fc, fw
    valid = ((fb < fc and fb <= fa) or (fb < fa and fb <= fc)) and (xa < xb < xc or xc < xb < xa)
    if valid and math.isfinite(xa) and math.isfinite(xb) and math.isfinite(xc):
        return xa, xb, xc, fb
    points, values = [xa, xb, xc], [fa, fb, fc]
    if any(math.isnan(v) for v in points + values):
        return math.nan, math.nan
    best = min(range(3), key=lambda k: (values[k], k))
    return points[best], values[best]
