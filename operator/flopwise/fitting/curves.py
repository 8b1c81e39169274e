"""Two small fits the campaign leans on besides the loss law, each with a stated error:

* :func:`parabola_vertex` — the minimum of y over x from a least-squares parabola, with the delta-method
  standard error of its location (Hoffmann et al. 2022 §3.2 fit IsoFLOP profiles this way; Round 1 finds the
  best learning rate this way, in log-LR).
* :func:`fit_power_law` — log y = log a + b·log x by weighted least squares, weights 1/se² of each log y,
  extrapolated with the coefficients' covariance (DeepSeek LLM fitted η_opt and N_opt(C) as power laws). With
  three or more points the covariance is inflated by the residual scatter when that is larger (Birge ratio) and
  a t quantile with n − 2 degrees of freedom is used; with two points, a normal quantile. Given a prior on
  the exponent (Approach 2 with too few levels to fit one), the prior is one more observation of the slope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Vertex:
    x: float  # where the parabola is lowest (clamped to the points' range)
    se: float  # standard error of x (delta method); the points' span when not convex or clamped
    y: float  # the parabola's value there
    convex: bool
    clamped: bool  # the vertex lay outside the points and was moved to the nearest end
    residual_sd: float  # the scatter of y around the parabola (0 with three points)


def parabola_vertex(x: np.ndarray, y: np.ndarray, noise_sd: float | None = None) -> Vertex:
    """Least-squares y = a·(x − x0)² + b·(x − x0) + c over ≥ 3 points. The noise in y is the larger of the
    residual scatter and ``noise_sd`` (a three-point parabola has no residual to speak of)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 3 or np.unique(x).size < 3:
        raise ValueError("a parabola needs three distinct x")
    x0 = float(x[np.argmin(y)])
    dx = x - x0
    design = np.stack([dx * dx, dx, np.ones_like(dx)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b, c = (float(v) for v in coef)
    dof = x.size - 3
    residual = float(np.sqrt(np.sum((design @ coef - y) ** 2) / dof)) if dof > 0 else 0.0
    span = float(np.ptp(x))
    if not a > 0:
        return Vertex(x=x0, se=span, y=float(y.min()), convex=False, clamped=False, residual_sd=residual)
    offset = -b / (2 * a)
    low, high = float(dx.min()), float(dx.max())
    clamped = not low <= offset <= high
    offset_in = min(max(offset, low), high)
    sigma = max(residual, noise_sd or 0.0)
    cov = sigma**2 * np.linalg.pinv(design.T @ design)
    grad = np.array([b / (2 * a * a), -1 / (2 * a), 0.0])
    se = float(math.sqrt(max(grad @ cov @ grad, 0.0)))
    value = a * offset_in**2 + b * offset_in + c
    return Vertex(x=x0 + offset_in, se=span if clamped else se, y=value, convex=True, clamped=clamped,
                  residual_sd=residual)


@dataclass(frozen=True)
class PowerLaw:
    """y(x) = coefficient · x^exponent, fitted in log space, with the covariance of (log a, b)."""

    coefficient: float
    exponent: float
    exponent_low: float
    exponent_high: float
    cov: np.ndarray
    quantile: float
    n: int

    def predict(self, x: float) -> tuple[float, float, float]:
        """(y, low, high) at ``x``: the fit's value and its interval (from the coefficients' covariance)."""
        v = np.array([1.0, math.log(x)])
        mean = math.log(self.coefficient) + self.exponent * math.log(x)
        sd = math.sqrt(max(float(v @ self.cov @ v), 0.0))
        return math.exp(mean), math.exp(mean - self.quantile * sd), math.exp(mean + self.quantile * sd)


def fit_power_law(xs: list[float], ys: list[float], log_ses: list[float], level: float = LEVEL,
                  exponent_prior: tuple[float, float] | None = None) -> PowerLaw:
    """Weighted least squares of log(y) on log(x); needs ≥ 2 distinct x (ValueError otherwise).

    ``exponent_prior`` = (mean, sd) adds the exponent's prior as one more observation of it (a Gaussian prior:
    the posterior mode and covariance of (log a, b)); one x is then enough, the prior carrying the slope and its
    uncertainty, and with many x the data outweigh it. Intervals then use a normal quantile."""
    x, y = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    if exponent_prior is None and (len(x) < 2 or np.ptp(x) <= 0):
        raise ValueError("a power law needs values at two or more distinct x")
    if len(x) < 1:
        raise ValueError("a power law needs at least one value")
    se = np.maximum(np.asarray(log_ses, float), 1e-3)
    w = 1.0 / se**2
    design = np.stack([np.ones_like(x), x], axis=1)
    target = y
    if exponent_prior is not None:
        mean, sd = exponent_prior
        design, target = np.vstack([design, [[0.0, 1.0]]]), np.append(y, mean)
        w = np.append(w, 1.0 / sd**2)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    coef = cov @ design.T @ (w * target)
    n = len(x)
    if n >= 3:  # Birge ratio: more scatter than the stated errors allow widens it (a prior row is one more dof)
        chi2 = float(np.sum(w * (target - design @ coef) ** 2))
        cov = cov * max(1.0, chi2 / (n - 2 + (exponent_prior is not None)))
    if exponent_prior is None and n >= 3:
        quantile = float(stats.t.ppf(0.5 + level / 2, n - 2))
    else:
        quantile = float(stats.norm.ppf(0.5 + level / 2))
    b, sd_b = float(coef[1]), math.sqrt(float(cov[1, 1]))
    return PowerLaw(coefficient=math.exp(coef[0]), exponent=b, exponent_low=b - quantile * sd_b,
                    exponent_high=b + quantile * sd_b, cov=cov, quantile=quantile, n=n)
