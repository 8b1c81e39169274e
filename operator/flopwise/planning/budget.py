"""Dollars ↔ FLOPs through a GPU pool: GPU-hours = C / (peak · MFU · 3600), cost = GPU-hours · price."""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Pool:
    """What converts FLOPs into time and money: per-GPU peak FLOP/s, utilisation, price per GPU-hour."""

    peak_flops: float
    mfu: float
    price_per_gpu_hour: float = 0.0

    def __post_init__(self) -> None:
        if not (self.peak_flops > 0 and 0 < self.mfu <= 1 and self.price_per_gpu_hour >= 0):
            raise ValueError(f"invalid pool: peak {self.peak_flops}, mfu {self.mfu}, price {self.price_per_gpu_hour}")

    def gpu_hours(self, flops: float) -> float:
        return flops / (self.peak_flops * self.mfu * SECONDS_PER_HOUR)

    def usd(self, flops: float) -> float:
        return self.gpu_hours(flops) * self.price_per_gpu_hour

    def flops_for_usd(self, usd: float) -> float:
        if self.price_per_gpu_hour <= 0:
            raise ValueError("a dollar budget needs a price per GPU-hour above 0")
        return usd / self.price_per_gpu_hour * self.peak_flops * self.mfu * SECONDS_PER_HOUR


def binding_budget(pool: Pool, flops: float | None, usd: float | None) -> tuple[float, str]:
    """The FLOPs a campaign may use, and which limit binds ("flops" or "usd"): the tighter one."""
    limits: list[tuple[float, str]] = []
    if flops is not None:
        limits.append((flops, "flops"))
    if usd is not None:
        limits.append((pool.flops_for_usd(usd), "usd"))
    if not limits:
        raise ValueError("no budget: give flops and/or usd")
    return min(limits)
