"""Parametric scaling laws L(N, D) = E + A/N^α + B/D^β and their compute-optimal allocation.

Published laws (Hoffmann et al. 2022, Approach 3 rounded and unrounded; Epoch AI's 2024 refit) and any law
fitted by a campaign share one type, so every consumer (planner, fitter, engine, report) uses the same
closed-form optimum under C = 6·N·D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A / N**alpha + B / D**beta, N in parameters and D in tokens."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    name: str = "fitted"

    def loss(self, params: float, tokens: float) -> float:
        # A·N^-α rather than A / N^α: a bootstrap resample with a huge exponent underflows to 0 instead of
        # raising OverflowError on N^α.
        return self.E + self.A * params ** -self.alpha + self.B * tokens ** -self.beta

    @property
    def params_exponent(self) -> float:
        """a in N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def tokens_exponent(self) -> float:
        """b in D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    def compute_optimal(self, flops: float) -> ComputeOptimum:
        """Minimise L subject to 6·N·D = C (Hoffmann et al., eq. 4):
        N_opt = G·(C/6)^a, D_opt = G⁻¹·(C/6)^b, G = (αA / (βB))^(1/(α+β))."""
        if not flops > 0:
            raise ValueError(f"compute budget must be positive, got {flops!r}")
        self.check_allocatable()
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        params = g * (flops / 6.0) ** self.params_exponent
        tokens = (flops / 6.0) ** self.tokens_exponent / g
        return ComputeOptimum(flops=flops, params=params, tokens=tokens, loss=self.loss(params, tokens))

    def allocate(self, flops: float) -> ComputeOptimum:
        return self.compute_optimal(flops)

    def check_allocatable(self) -> None:
        """The optimum exists only when both power terms are real trade-offs (A, B, α, β > 0, finite)."""
        values = (self.A, self.B, self.alpha, self.beta)
        if not all(math.isfinite(v) and v > 1e-12 for v in values):
            raise ValueError(f"law {self.name} is degenerate (A={self.A:.3g}, B={self.B:.3g}, α={self.alpha:.3g}, "
                             f"β={self.beta:.3g}): it has no compute-optimal allocation")

    def flops_for_params(self, params: float) -> float:
        """The budget for which ``params`` is compute-optimal (inverse of N_opt(C))."""
        self.check_allocatable()
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return 6.0 * (params / g) ** (1.0 / self.params_exponent)

    def as_dict(self) -> dict[str, float | str]:
        return {"name": self.name, "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}


@dataclass(frozen=True)
class ComputeOptimum:
    flops: float
    params: float
    tokens: float
    loss: float | None

    @property
    def tokens_per_param(self) -> float:
        return self.tokens / self.params


CHINCHILLA_3_ROUNDED = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, name="chinchilla-3-rounded")
CHINCHILLA_3 = ScalingLaw(
    E=math.exp(0.5267228), A=math.exp(6.0073404), B=math.exp(6.0179186),
    alpha=0.33917084, beta=0.2849083, name="chinchilla-3",
)
EPOCH = ScalingLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658, name="epoch")
"""Epoch AI's refit of the Chinchilla points (Besiroglu et al. 2024, arXiv:2404.10102), their Table 1."""


@dataclass(frozen=True)
class PowerLawAllocation:
    """Chinchilla Approaches 1 and 2 give N_opt ∝ C^a (and D = C/(6N)) rather than a loss law.

    Each carries the paper's exponent (0.50 and 0.49); its one coefficient is the least-squares fit, in log
    space, of N = k·C^a to the six (N, C) rows of the paper's Table 3 for that approach, written here as the
    budget at which a 1B-parameter model is optimal. Its tokens follow from C = 6·N·D.
    """

    params_exponent: float
    anchor_params: float
    anchor_flops: float
    name: str

    def allocate(self, flops: float) -> ComputeOptimum:
        if not flops > 0:
            raise ValueError(f"compute budget must be positive, got {flops!r}")
        params = self.anchor_params * (flops / self.anchor_flops) ** self.params_exponent
        return ComputeOptimum(flops=flops, params=params, tokens=flops / (6.0 * params), loss=None)

    def flops_for_params(self, params: float) -> float:
        return self.anchor_flops * (params / self.anchor_params) ** (1.0 / self.params_exponent)


CHINCHILLA_1 = PowerLawAllocation(params_exponent=0.50, anchor_params=1e9, anchor_flops=1.241e20, name="chinchilla-1")
CHINCHILLA_2 = PowerLawAllocation(params_exponent=0.49, anchor_params=1e9, anchor_flops=1.214e20, name="chinchilla-2")

AllocationRule = ScalingLaw | PowerLawAllocation

LAWS: dict[str, AllocationRule] = {
    rule.name: rule for rule in (CHINCHILLA_3, CHINCHILLA_3_ROUNDED, CHINCHILLA_1, CHINCHILLA_2, EPOCH)
}


def allocation_rule(name: str) -> AllocationRule:
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}: use one of {', '.join(LAWS)}") from None


def tokens_for_params(rule: AllocationRule, params: float) -> float:
    """Compute-optimal training tokens for a model of ``params`` parameters under ``rule``."""
    return rule.allocate(rule.flops_for_params(params)).tokens


CAMPAIGN_LAW = "campaign"


def campaign_law_name(basis: str) -> str:
    """The name of an allocation the campaign measured itself, with its basis (status.allocation.basis)."""
    return f"{CAMPAIGN_LAW} ({basis})"


def campaign_basis(name: str) -> str | None:
    """The basis in a :func:`campaign_law_name`, or None for any other law's name."""
    prefix = f"{CAMPAIGN_LAW} ("
    return name[len(prefix):-1] if name.startswith(prefix) and name.endswith(")") else None
