"""Chinchilla's Approach 2: the compute-optimal size read off IsoFLOP profiles, independent of the loss law.

Hoffmann et al. 2022 §3.2 (Figure 3): at each of several compute budgets, models of several sizes are trained to
that budget; a parabola of loss against log N gives the best size N_opt(C) at each budget; N_opt = k·C^a is fitted
across budgets and extrapolated. It assumes no functional form for L(N, D), so it is the cross-check of the
parametric allocation (their Table 2 shows the approaches agreeing to a = 0.46–0.50).

Profiles come either straight from an IsoFLOP ladder (runs grouped by compute level), or from a WSD ladder's
annealed endpoints: each size's loss is interpolated (linearly in log D) at the tokens a budget buys it, only
inside the token counts it was trained to — never extrapolated. Such profiles share runs, so their minima are
correlated and the interval below is optimistic for them; the status says which kind was used.

The parabola is fitted to log L (noise is relative), the vertex's standard error by the delta method with the
noise taken as the larger of the residual scatter and the seed-noise floor. Where the lowest size has neighbours
on both sides but the parabola through every size puts its vertex outside them (a lopsided profile: at tiny
scale a data-starved size's loss rises far faster than a parameter-starved one's), the vertex is read off the
best size and its two neighbours. A level whose minimum lies outside
the sizes it tried (the parabola's vertex clamped to an end) or that is not convex brackets nothing and is left
out; the power law needs two bracketed levels.

With fewer bracketed levels than that, or levels too close in compute to pin the exponent, :func:`approach2` can
take the exponent from a prior (``exponent_prior``): Epoch's refit (a = β/(α+β) = 0.513, the exponents the borrowed
loss law holds) with a standard deviation of 0.11, so that its 95% range [0.30, 0.73] holds every published
estimate for language models, from Chinchilla's Approach 3 (0.46; Hoffmann et al. Table 2) to Kaplan et al. 2020
(0.73). One bracketed level then sets the coefficient, and the interval widens with the distance to the budget.
A departure from Chinchilla, who fitted the exponent from many levels; the status says which was used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flopwise.fitting.curves import PowerLaw, fit_power_law, parabola_vertex
from flopwise.planning.laws import EPOCH

DEFAULT_NOISE = 0.01
"""Relative loss noise assumed when no seed-noise floor was measured."""
MIN_SIZES = 3
EXPONENT_PRIOR = (EPOCH.beta / (EPOCH.alpha + EPOCH.beta), 0.11)
"""Epoch's a = 0.513 and a standard deviation whose 95% range [0.30, 0.73] holds Chinchilla's 0.46–0.50 and
Kaplan's 0.73."""


@dataclass(frozen=True)
class Profile:
    """One compute level: the sizes tried, their losses, and the parabola's minimum."""

    flops: float
    params: tuple[float, ...]
    losses: tuple[float, ...]
    params_opt: float | None  # None when the level brackets no minimum
    log_se: float | None
    loss_min: float | None
    note: str

    @property
    def bracketed(self) -> bool:
        return self.params_opt is not None


def profile(flops: float, params: list[float], losses: list[float], noise: float = DEFAULT_NOISE) -> Profile:
    """The minimum of one level's loss-vs-size parabola (in log N, log L)."""
    order = np.argsort(params)
    n = np.asarray(params, float)[order]
    loss = np.asarray(losses, float)[order]
    keep = np.isfinite(loss) & (loss > 0)
    n, loss = n[keep], loss[keep]
    base = dict(flops=float(flops), params=tuple(float(v) for v in n), losses=tuple(float(v) for v in loss))
    if np.unique(n).size < MIN_SIZES:
        return Profile(**base, params_opt=None, log_se=None, loss_min=None,
                       note=f"{np.unique(n).size} sizes: a parabola needs {MIN_SIZES}")
    vertex = parabola_vertex(np.log(n), np.log(loss), noise_sd=noise)
    local = ""
    best = int(np.argmin(loss))
    if (vertex.clamped or not vertex.convex) and n.size > MIN_SIZES and 0 < best < n.size - 1:
        # The lowest size has a neighbour on each side, yet one parabola through every size puts its vertex
        # outside them: the profile is lopsided (far from the minimum, a data-starved size rises much faster
        # than a parameter-starved one falls). The minimum is then read off the best size and its two
        # neighbours alone — a departure from Chinchilla's parabola through every size, said in the note.
        window = slice(best - 1, best + 2)
        vertex = parabola_vertex(np.log(n[window]), np.log(loss[window]), noise_sd=noise)
        local = f" (a parabola through the best size and its neighbours: all {n.size} sizes are lopsided)"
    if not vertex.convex:
        return Profile(**base, params_opt=None, log_se=None, loss_min=None, note="not convex: no minimum")
    if vertex.clamped:
        side = "largest" if vertex.x >= math.log(n[-1]) - 1e-12 else "smallest"
        return Profile(**base, params_opt=None, log_se=None, loss_min=None,
                       note=f"the minimum lies beyond the {side} size tried")
    return Profile(**base, params_opt=math.exp(vertex.x), log_se=vertex.se, loss_min=math.exp(vertex.y),
                   note=f"minimum at {math.exp(vertex.x):.3g} params (±{vertex.se:.2f} in log){local}")


def profiles_by_level(levels: list[int], flops: list[float], params: list[float], losses: list[float],
                      noise: float = DEFAULT_NOISE) -> list[Profile]:
    """Profiles of an IsoFLOP ladder: runs grouped by their level, at the level's mean compute."""
    out = []
    for level in sorted(set(levels)):
        sel = [i for i, v in enumerate(levels) if v == level]
        out.append(profile(float(np.mean([flops[i] for i in sel])), [params[i] for i in sel],
                           [losses[i] for i in sel], noise))
    return out


def profiles_by_interpolation(params: list[float], tokens: list[float], flops_per_token: list[float],
                              losses: list[float], *, count: int = 4,
                              noise: float = DEFAULT_NOISE) -> list[Profile]:
    """Profiles from endpoints at several token counts per size (a WSD ladder): ``count`` budgets log-spaced
    over the range where at least three sizes can be interpolated."""
    by_size: dict[float, list[tuple[float, float, float]]] = {}
    for n, d, fpt, loss in zip(params, tokens, flops_per_token, losses, strict=True):
        if math.isfinite(loss) and loss > 0:
            by_size.setdefault(float(n), []).append((float(d), float(fpt), float(loss)))
    spans = {}
    for n, rows in by_size.items():
        rows.sort()
        if len(rows) >= 2:
            spans[n] = (rows[0][0] * rows[0][1], rows[-1][0] * rows[-1][1])
    if len(spans) < MIN_SIZES:
        return []
    lows, highs = sorted(lo for lo, _ in spans.values()), sorted(hi for _, hi in spans.values())
    # Budgets that at least three sizes reach: between the third-smallest upper end and third-largest lower end.
    top, bottom = highs[-MIN_SIZES], lows[MIN_SIZES - 1]
    low, high = min(bottom, top), max(bottom, top)
    budgets = np.geomspace(low, high, count) if high > low else np.array([low])
    out = []
    for c in budgets:
        sizes, values = [], []
        for n, rows in by_size.items():
            d = np.array([r[0] for r in rows])
            fpt = rows[0][1]
            want = c / fpt
            if len(rows) >= 2 and d[0] * (1 - 1e-9) <= want <= d[-1] * (1 + 1e-9):
                sizes.append(n)
                values.append(math.exp(float(np.interp(math.log(want), np.log(d), np.log([r[2] for r in rows])))))
        out.append(profile(float(c), sizes, values, noise))
    return out


@dataclass(frozen=True)
class Approach2:
    profiles: list[Profile]
    law: PowerLaw | None  # N_opt = coefficient · C^exponent over the bracketed levels
    flops: float  # the budget it was asked about
    params: float | None
    params_low: float | None
    params_high: float | None
    interpolated: bool
    note: str


def approach2(profiles: list[Profile], flops: float, *, interpolated: bool = False,
              exponent_prior: tuple[float, float] | None = None) -> Approach2:
    """N_opt at ``flops`` from the bracketed profiles' minima (power law in C), with its 95% interval; with
    ``exponent_prior`` (mean, sd) the exponent is the prior's, updated by the levels (one level suffices)."""
    usable = [p for p in profiles if p.bracketed]
    skipped = [p for p in profiles if not p.bracketed]
    why = "; ".join(f"{p.flops:.3g} FLOPs: {p.note}" for p in skipped)
    needed = 1 if exponent_prior is not None else 2
    if len(usable) < needed or (exponent_prior is None and np.ptp([math.log(p.flops) for p in usable]) <= 0):
        note = f"{len(usable)} of {len(profiles)} compute levels bracket a minimum: too few for N_opt(C)"
        return Approach2(profiles=profiles, law=None, flops=flops, params=None, params_low=None, params_high=None,
                         interpolated=interpolated, note=note + (f" ({why})" if why else ""))
    law = fit_power_law([p.flops for p in usable], [p.params_opt for p in usable],  # type: ignore[misc]
                        [p.log_se for p in usable], exponent_prior=exponent_prior)  # type: ignore[misc]
    params, low, high = law.predict(flops)
    held = "" if exponent_prior is None else \
        f" (exponent's prior {exponent_prior[0]:.3f} ± {exponent_prior[1]:.2f}, Epoch's refit)"
    note = (f"N_opt ∝ C^{law.exponent:.3f} [{law.exponent_low:.3f}, {law.exponent_high:.3f}]{held} over "
            f"{len(usable)} {'interpolated ' if interpolated else ''}IsoFLOP profile{'s' if len(usable) > 1 else ''} "
            f"gives {params:.3g} params [{low:.3g}, {high:.3g}] at {flops:.3g} FLOPs")
    return Approach2(profiles=profiles, law=law, flops=flops, params=params, params_low=low, params_high=high,
                     interpolated=interpolated, note=note + (f"; left out: {why}" if why else ""))
