"""The profile of the Chinchilla form over its irreducible loss E: how well L = E + A/N^α + B/D^β fits the points
with E held at each of a grid of values below the lowest loss (A, B, α, β refitted; least squares in log loss, a
diagnostic beside the Huber fit of :mod:`.fit`), and the profile-likelihood interval of E it gives.

Why: when the five-parameter fit puts E at its bound 0, the question a team asks is whether more fitting or more
compute would pin it. The 95% profile-likelihood set {E : n·ln(SSR(E)/SSR_min) ≤ 3.84} (χ² with one degree of
freedom; Gaussian errors of unknown sd, an approximation where the form's misfit dominates the noise) answers it:
when it reaches 0 and most of the way to the lowest loss, the points do not bound E at all, E and β trade off along a
valley, and only points over a wider range of compute (losses nearer E) would separate them. On the real quickstarts
it is [0, 0.8–1.2] nats against a lowest loss of 1.65 (benchmarks/e_profile.py; benchmarks/RESULTS.md, "Why the
quickstart cannot identify E").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from flopwise.fitting.points import FitPoints

FRACTIONS = tuple(i / 10 for i in range(10))  # E as a share of the lowest loss: the form needs E below every loss
CHI2_1_95 = 3.841  # the 95% point of χ² with one degree of freedom


@dataclass(frozen=True)
class ProfilePoint:
    e: float
    rms: float  # relative (log-loss) rms misfit of the best law with this E
    alpha: float
    beta: float
    log_a: float
    log_b: float

    def loss(self, params: float, tokens: float) -> float:
        return float(self.e + np.exp(self.log_a) * params ** -self.alpha + np.exp(self.log_b) * tokens ** -self.beta)


def fit_with_e(params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, e: float,
               starts: list[list[float]] | None = None) -> ProfilePoint:
    """The best (log A, log B, α, β) with E held at ``e`` from each start (default: a small grid of exponents)."""
    log_n, log_d, log_l = np.log(params), np.log(tokens), np.log(loss)

    def residuals(x: np.ndarray) -> np.ndarray:
        a, b, alpha, beta = x
        return np.log(e + np.exp(a - alpha * log_n) + np.exp(b - beta * log_d)) - log_l

    starts = starts or [[np.log(20.0), np.log(100.0), alpha, beta] for alpha in (0.2, 0.5, 1.0) for beta in (0.2, 0.4)]
    best = None
    with np.errstate(all="ignore"):
        for start in starts:
            found = least_squares(residuals, start, bounds=([-10, -10, 0.01, 0.01], [40, 40, 3, 3]))
            if best is None or found.cost < best.cost:
                best = found
    assert best is not None
    a, b, alpha, beta = (float(v) for v in best.x)
    return ProfilePoint(e=e, rms=float(np.sqrt(np.mean(best.fun ** 2))), alpha=alpha, beta=beta, log_a=a, log_b=b)


def profile_e(points: FitPoints, fractions: tuple[float, ...] = FRACTIONS) -> list[ProfilePoint]:
    """The fit at E = each fraction of the lowest loss: the first from a grid of exponents, each next one from the
    previous E's optimum and one fixed start (the valley moves smoothly with E)."""
    params, tokens, loss = (np.asarray(v, float) for v in (points.params, points.tokens, points.loss))
    found: list[ProfilePoint] = []
    for fraction in fractions:
        starts = [[found[-1].log_a, found[-1].log_b, found[-1].alpha, found[-1].beta],
                  [np.log(20.0), np.log(100.0), 0.5, 0.3]] if found else None
        found.append(fit_with_e(params, tokens, loss, fraction * float(loss.min()), starts))
    return found


def interval(profile: list[ProfilePoint], n_points: int) -> tuple[float, float]:
    """The 95% profile-likelihood interval of E on the grid (its ends interpolated linearly in the statistic)."""
    rms = [max(p.rms, 1e-12) for p in profile]  # a perfect fit still has its best point inside
    stat = [n_points * 2 * np.log(r / min(rms)) for r in rms]
    inside = [i for i, value in enumerate(stat) if value <= CHI2_1_95]
    low_i, high_i = inside[0], inside[-1]

    def edge(i: int, j: int) -> float:  # between grid points i (inside) and j (outside)
        t = (CHI2_1_95 - stat[i]) / (stat[j] - stat[i])
        return profile[i].e + t * (profile[j].e - profile[i].e)

    low = profile[0].e if low_i == 0 else edge(low_i, low_i - 1)
    high = profile[-1].e if high_i == len(profile) - 1 else edge(high_i, high_i + 1)
    return float(low), float(high)


def describe(profile: list[ProfilePoint], n_points: int, lowest_loss: float) -> str:
    """One sentence for the status and the report: E's 95% profile interval, against the lowest loss measured."""
    low, high = interval(profile, n_points)
    betas = [p.beta for p in profile if low <= p.e <= high]
    text = (f"E's 95% profile-likelihood interval: [{low:.3g}, {high:.3g}] nats ({n_points} points; the lowest loss "
            f"{lowest_loss:.3g}; β {min(betas):.2f}–{max(betas):.2f} along it)")
    if low <= profile[0].e and high >= 0.5 * lowest_loss:
        text += ("; it reaches 0 and half the lowest loss: these points do not bound E, and only a wider range of "
                 "compute (losses nearer E) would pin it")
    return text
