"""Is a fitted law identified by its data? A team bets a large run on it, so a law the data cannot pin down is
said out loud, never silently recommended from.

A fit is *not identified* when (each check names what failed):
* a parameter sits at a bound of the search: E collapsed to ~0 (the N and D terms absorbed the floor; the
  quickstart once reported E = 2.7e-132), or an exponent at or beyond the start grid's range (α, β ≥ 2.5) or
  ~0 (a power term turned into a constant);
* a 95% bootstrap interval spans orders of magnitude: A or B more than 1000× (three decades), E more than 10×
  (its lower end near 0), an exponent wider than 1.0;
* the decision it would make is not pinned down: the 95% interval of N_opt at the target budget spans more
  than 10×.

The thresholds are deliberately loose: they catch laws that mean nothing, not laws that are merely uncertain
(an uncertain law is reported with its intervals). They were checked by simulation
(`benchmarks/calibration.py`): designs that identify the law pass them in nearly every draw.
"""

from __future__ import annotations

from collections.abc import Mapping

from flopwise.planning.laws import ScalingLaw

E_FLOOR = 1e-3  # E below this (in nats) has collapsed to the bound at 0
EXPONENT_MIN, EXPONENT_MAX = 0.02, 2.5
MAX_COEFFICIENT_SPAN = 1e3
MAX_E_SPAN = 10.0
MAX_EXPONENT_WIDTH = 1.0
MAX_ALLOCATION_SPAN = 10.0


def problems(law: ScalingLaw, ci_low: Mapping[str, float], ci_high: Mapping[str, float], *,
             free_exponents: bool = True, params_low: float | None = None,
             params_high: float | None = None) -> list[str]:
    """Why the law is not identified (empty when it is). ``ci_low``/``ci_high`` are 95% intervals by
    parameter name (E, A, B, alpha, beta); ``params_low``/``params_high`` the interval of N_opt at the target."""
    found: list[str] = []
    if law.E < E_FLOOR:
        found.append(f"E = {law.E:.3g} is at its bound 0 (the power terms absorbed the irreducible loss)")
    if free_exponents:
        for name, value in (("α", law.alpha), ("β", law.beta)):
            if value <= EXPONENT_MIN:
                found.append(f"{name} = {value:.3g} is at its bound 0 (its power term is a constant)")
            elif value >= EXPONENT_MAX:
                found.append(f"{name} = {value:.3g} is beyond the plausible range (≥ {EXPONENT_MAX:g})")
    for name, limit in (("A", MAX_COEFFICIENT_SPAN), ("B", MAX_COEFFICIENT_SPAN), ("E", MAX_E_SPAN)):
        low, high = ci_low.get(name), ci_high.get(name)
        if low is not None and high is not None and (low <= 0 or high / low > limit):
            span = "its lower end at 0" if low <= 0 else f"{high / low:.3g}×"
            found.append(f"{name}'s 95% interval [{low:.3g}, {high:.3g}] spans {span} (more than {limit:g}×)")
    if free_exponents:
        for name, key in (("α", "alpha"), ("β", "beta")):
            low, high = ci_low.get(key), ci_high.get(key)
            if low is not None and high is not None and high - low > MAX_EXPONENT_WIDTH:
                found.append(f"{name}'s 95% interval [{low:.3g}, {high:.3g}] is wider than {MAX_EXPONENT_WIDTH:g}")
    if params_low is not None and params_high is not None and params_low > 0 \
            and params_high / params_low > MAX_ALLOCATION_SPAN:
        found.append(f"the compute-optimal size's 95% interval [{params_low:.3g}, {params_high:.3g}] spans "
                     f"{params_high / params_low:.3g}× (more than {MAX_ALLOCATION_SPAN:g}×)")
    return found
