"""Planning time per campaign: the shape search one depth at a time for every family (the baseline, as before)
against the default (numpy across depths for families of more than FEW_DEPTHS depths), on the examples and on
the operator benchmark's campaign. The operator plans a new campaign on its reconcile thread, under the GIL, so
this is CPU every other campaign waits for. Both sides must plan the same campaign exactly alike.

    python benchmarks/plan_bench.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from flopwise.api.spec import TrainingCampaignSpec
from flopwise.planning import shapes
from flopwise.planning.plan import plan_campaign

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from operator_bench import campaign_doc  # noqa: E402


def campaigns() -> dict[str, TrainingCampaignSpec]:
    found = {f"examples/{p.name}": yaml.safe_load(p.read_text())["spec"]
             for p in sorted((ROOT / "examples").glob("*.yaml"))}
    found["operator_bench campaign"] = campaign_doc("c000", "x", 4)["spec"]
    return {name: TrainingCampaignSpec.model_validate(spec) for name, spec in found.items()}


def ms_per_plan(spec: TrainingCampaignSpec, repeat: int) -> tuple[float, str]:
    plan = plan_campaign(spec)  # warm: imports, caches
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            plan_campaign(spec)
        best = min(best, (time.perf_counter() - start) / repeat * 1e3)
    return best, plan.model_dump_json()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    default = shapes.FEW_DEPTHS
    print(f"{'campaign':<34} {'depths':>6} | {'one depth at a time':>20} | {'default':>9} | speed-up | same plan")
    same_everywhere = True
    for name, spec in campaigns().items():
        shapes.FEW_DEPTHS = 10**9
        before, plan_before = ms_per_plan(spec, args.repeat)
        shapes.FEW_DEPTHS = default
        now, plan_now = ms_per_plan(spec, args.repeat)
        same = plan_before == plan_now
        same_everywhere &= same
        depths = spec.model.max_layers - spec.model.min_layers + 1
        print(f"{name:<34} {depths:>6} | {before:>17.1f} ms | {now:>6.1f} ms | {before / now:>7.1f}× | {same}")
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
