"""What a trainer would report for a RunSpec under a known truth: for tests and benchmarks that play the node.

The loss follows ``TRUTH`` (a scaling law) plus a bowl in log-LR with its minimum at ``BEST_LR`` (Round 1's
truth); the run takes the time the tiny test campaign's pool predicts (MFU 0.2 of 1e10 FLOP/s), so the
measured MFU equals the planned one.
"""

from __future__ import annotations

import math

from flopwise.contract import CurvePoint, RunSpec, RunSummary
from flopwise.planning.laws import ScalingLaw

TRUTH = ScalingLaw(E=1.2, A=40.0, B=60.0, alpha=0.35, beta=0.3)
BEST_LR = 0.012
POOL_FLOPS_PER_S = 0.2 * 1e10


def lr_penalty(lr: float) -> float:
    return 0.3 * math.log(lr / BEST_LR) ** 2


def summary_for(spec: RunSpec) -> RunSummary:
    params, tokens = spec.shape.param_count(), spec.tokens
    curve = [CurvePoint(tokens=int(tokens * f), val_loss=TRUTH.loss(params, tokens * f) + lr_penalty(spec.optimizer.lr))
             for f in (0.25, 0.5, 0.75, 1.0)]
    flops = spec.shape.flops_per_token() * tokens
    elapsed = flops / POOL_FLOPS_PER_S
    final = curve[-1].val_loss
    return RunSummary(run_id=spec.run_id, status="succeeded", params=params, tokens=tokens, steps=spec.total_steps,
                      flops=flops, final_val_loss=final, best_val_loss=final, best_step=spec.total_steps,
                      best_tokens=tokens, curve=curve, elapsed_s=elapsed, tokens_per_s=tokens / elapsed)
