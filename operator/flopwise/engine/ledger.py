"""The budget ledger: reserve before a run starts, settle to what it measured, charge failures.

The per-run records are the only book; totals are derived from them (`totals`), so the two can never
disagree. Invariant, checked wherever a charge changes: reserved + spent ≤ budget in FLOPs, and in dollars
when the pool is priced.

Spend is real and capped. A reservation is the worst case the executor allows a run (`worst_case`): its compute
at the *measured* MFU once runs have finished (the pool's expected MFU before that), plus the start-up slack and
the grace period after a stop, during which its GPUs are held too. The executor enforces exactly that (Kubernetes:
the Job's activeDeadlineSeconds is the reservation's wall time less the grace period; the trainer never trains past
its tokens). A settled run is charged what it really used — on a cluster the GPU time its Pods held, whatever its
report says — capped at its reservation: a measurement above it is a clock or report fault, noted on the run,
never a ledger overdraft. So reserved + spent ≤ budget holds for real dollars, not only for reported ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from flopwise.api.spec import Budget
from flopwise.api.status import Charge, LedgerTotals, RunRecord
from flopwise.planning.budget import Pool

EPS = 1e-9


@dataclass(frozen=True)
class Limits:
    """The limits the user set: FLOPs and/or dollars (None: not a limit). The plan converts one into the
    other to size runs; the ledger enforces exactly what was set."""

    flops: float | None
    usd: float | None

    @classmethod
    def of(cls, budget: Budget) -> Limits:
        return cls(flops=budget.flops, usd=budget.usd)


class LedgerError(AssertionError):
    """The invariant broke: a bug, never a user error."""


def charge_for(pool: Pool, flops: float, mfu: float | None = None) -> Charge:
    """What ``flops`` cost on ``pool`` at ``mfu`` (default: the pool's)."""
    rate = Pool(peak_flops=pool.peak_flops, mfu=mfu or pool.mfu, price_per_gpu_hour=pool.price_per_gpu_hour)
    return Charge(flops=flops, gpu_hours=rate.gpu_hours(flops), usd=rate.usd(flops))


def worst_case(pool: Pool, flops: float, *, gpus: int, overhead_s: float, mfu: float | None = None) -> Charge:
    """What a run of ``flops`` may cost at most: its compute at ``mfu`` plus ``overhead_s`` of wall time on its
    ``gpus`` (start-up before training, the grace after a stop) that its executor lets it hold them for."""
    compute = charge_for(pool, flops, mfu)
    extra = max(0.0, overhead_s) * gpus / 3600.0
    return Charge(flops=flops, gpu_hours=compute.gpu_hours + extra, usd=compute.usd + extra * pool.price_per_gpu_hour)


def totals(records: list[RunRecord], limits: Limits, planned_flops: float = 0.0) -> LedgerTotals:
    """Totals of the per-run book. ``planned_flops`` (the plan's binding budget in FLOPs) is shown as the FLOP
    budget when only dollars were set."""
    reserved = _sum(r.reserved for r in records)
    spent = _sum(r.spent for r in records)
    used = 0.0
    if limits.flops:
        used = (reserved.flops + spent.flops) / limits.flops
    if limits.usd:
        used = max(used, (reserved.usd + spent.usd) / limits.usd)
    return LedgerTotals(budget_flops=limits.flops or planned_flops, budget_usd=limits.usd,
                        reserved_flops=reserved.flops,
                        spent_flops=spent.flops, reserved_gpu_hours=reserved.gpu_hours, spent_gpu_hours=spent.gpu_hours,
                        reserved_usd=reserved.usd, spent_usd=spent.usd, used_percent=100.0 * used)


def _sum(charges) -> Charge:
    flops = gpu_hours = usd = 0.0
    for c in charges:
        flops, gpu_hours, usd = flops + c.flops, gpu_hours + c.gpu_hours, usd + c.usd
    return Charge(flops=flops, gpu_hours=gpu_hours, usd=usd)


def fits(records: list[RunRecord], charge: Charge, limits: Limits) -> bool:
    """Would reserving ``charge`` keep reserved + spent within every limit?"""
    t = totals(records, limits)
    if limits.flops is not None and t.reserved_flops + t.spent_flops + charge.flops > limits.flops * (1 + EPS) + EPS:
        return False
    return limits.usd is None or t.reserved_usd + t.spent_usd + charge.usd <= limits.usd + 1e-6


def check(records: list[RunRecord], limits: Limits) -> None:
    t = totals(records, limits)
    if limits.flops is not None and t.reserved_flops + t.spent_flops > limits.flops * (1 + EPS) + EPS:
        raise LedgerError(f"FLOPs over budget: reserved {t.reserved_flops:.6g} + spent {t.spent_flops:.6g} > "
                          f"{limits.flops:.6g}")
    if limits.usd is not None and t.reserved_usd + t.spent_usd > limits.usd + 1e-6:
        raise LedgerError(f"dollars over budget: reserved {t.reserved_usd:.2f} + spent {t.spent_usd:.2f} > "
                          f"{limits.usd:.2f}")


def reserve(record: RunRecord, charge: Charge) -> None:
    record.reserved = charge


def settle(record: RunRecord, measured: Charge) -> None:
    """Replace the reservation by what the run consumed (capped at the reservation, see module doc)."""
    held = record.reserved
    capped = Charge(flops=min(measured.flops, held.flops), gpu_hours=min(measured.gpu_hours, held.gpu_hours),
                    usd=min(measured.usd, held.usd))
    if measured.flops > held.flops * (1 + 1e-6) or measured.usd > held.usd + 1e-6:
        record.reason = (record.reason + " " if record.reason else "") + (
            f"measured {measured.flops:.4g} FLOPs / ${measured.usd:.2f} above its reservation; charged the "
            "reservation")
    record.spent = Charge(flops=record.spent.flops + capped.flops, gpu_hours=record.spent.gpu_hours + capped.gpu_hours,
                          usd=record.spent.usd + capped.usd)
    record.reserved = Charge()


def release(record: RunRecord) -> None:
    """Give a reservation back unspent (a run that never started)."""
    record.reserved = Charge()
