"""Ground truth for a local campaign's recommendation: train the recommended model, and two alternatives of the
same FLOPs, for real, and compare with what the campaign predicted.

After `flopwise run` (the quickstart by default; it is run, or resumed, first), three models are trained with
the trainer itself on the campaign's data, each for the recommendation's FLOPs, at the recommended learning rate,
warmup and schedule: the recommended size, half of it and twice it (the nearest shapes, tokens adjusted so that
FLOPs match). The recommendation is good when the recommended size measures within 1% of the best of the three,
its measured loss lies inside the predicted 95% interval, and |predicted − measured| / measured ≤ 3%.

    python benchmarks/ground_truth.py [--campaign examples/quickstart.yaml] [--state-dir DIR] [--json]

Each of the three costs the whole recommendation's FLOPs (the quickstart's: as long as the campaign itself).
``--flops-fraction F`` checks the law at F× that budget instead: the fitted law's optimum there (an
extrapolation beyond the ladder's largest run as long as F·C exceeds it), predicted by the law itself.
``--sizes recommended`` trains only the first (the prediction check without the optimum check); numbers in
``--sizes`` are further multiples of the recommended size (``--sizes 0.125,0.25,half,recommended`` measures the
loss-vs-size profile at the budget, and ``best`` says which size measured lowest). ``--jobs 2`` trains two at
once (one torch thread each is the quickstart's own setting for tiny models: they are dispatch-bound).

``--reconclude`` predicts with this checkout's engine from the campaign's own records (a state an older engine
wrote keeps its runs; the conclusion is recomputed as the engine makes it at the ladder's end) and adds
``predicted_each``: the engine's prediction, with its interval, at every size trained.

Prints one JSON object: ``predicted``, ``interval``, ``measured`` {recommended, half, double}, the shapes and
FLOPs of the three, and each goal with its verdict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flopwise.api.load import load_campaign
from flopwise.api.status import TrainingCampaignStatus
from flopwise.contract import EvalSpec, MupSpec, OptimizerSpec, RunSpec
from flopwise.engine import records
from flopwise.engine.conclude import conclude_ladder
from flopwise.engine.machine import campaign_seed
from flopwise.engine.runspec import val_batches
from flopwise.planning.laws import ScalingLaw, allocation_rule
from flopwise.planning.plan import final_budget
from flopwise.planning.shapes import ShapeRules, shape_for_params

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--campaign", type=Path, default=ROOT / "examples" / "quickstart.yaml")
    ap.add_argument("--state-dir", type=Path, default=None, help="default: flopwise-state/<campaign name>")
    ap.add_argument("--out", type=Path, default=None, help="where the three runs write (default: STATE/ground-truth)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    ap.add_argument("--sizes", default="recommended,half,double",
                    help="which of the three to train (each costs the recommendation's FLOPs; the optimum check "
                         "needs all three, the prediction check only 'recommended'); a number is a multiple "
                         "of the recommended size")
    ap.add_argument("--flops-fraction", type=float, default=1.0,
                    help="train at this fraction of the recommendation's FLOPs (a cheaper check: the size is the "
                         "fitted law's optimum there and the prediction the law's loss; no interval is in the status "
                         "for it, so that goal reads null)")
    ap.add_argument("--reconclude", action="store_true",
                    help="predict with this checkout's engine from the campaign's records, at every size trained")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    campaign = load_campaign(args.campaign)
    state = args.state_dir or ROOT / "flopwise-state" / campaign.metadata.name
    if not (state / "status.json").is_file() or TrainingCampaignStatus.model_validate_json(
            (state / "status.json").read_text()).phase != "Succeeded":
        resume = ["--resume"] if (state / "status.json").is_file() else []
        subprocess.run([sys.executable, "-m", "flopwise", "run", str(args.campaign), "--state-dir", str(state),
                        *resume], check=True)
    status = TrainingCampaignStatus.model_validate_json((state / "status.json").read_text())
    rec = status.recommendation
    if rec is None:
        sys.exit(f"{state}: the campaign has no recommendation ({status.phase}: {status.message})")
    spec = campaign.spec
    rules = ShapeRules.from_family(spec.model)
    flops = rec.flops * args.flops_fraction
    law = status.law
    fitted = ScalingLaw(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta) if law else None
    predicted, low, high = rec.predicted_loss, rec.loss_low, rec.loss_high
    rec_params = rec.params
    if args.flops_fraction != 1.0:
        if fitted is None:
            sys.exit("--flops-fraction needs the campaign's fitted law")
        rec_params = fitted.compute_optimal(flops).params
        if status.allocation is not None and status.allocation.basis == "prior":  # what the campaign recommends
            rec_params = allocation_rule(spec.law).allocate(flops).params
        elif status.allocation is not None and status.allocation.basis in ("approach-2", "approach-2-borrowed"):
            exponent = status.allocation.approach2.exponent if status.allocation.approach2 else None
            rec_params = rec.params * args.flops_fraction ** exponent if exponent else rec_params
        low = high = None
    suffix = "" if args.flops_fraction == 1.0 else f"-{args.flops_fraction:g}"
    out = args.out or state / f"ground-truth{suffix}"
    data = spec.dataset.path if Path(spec.dataset.path).is_absolute() else str(ROOT / spec.dataset.path)
    shapes, runs = {}, {}
    for name, factor in _sizes(args.sizes):
        shape = rec.shape if factor == 1.0 and args.flops_fraction == 1.0 else shape_for_params(
            rules, rec_params * factor)
        batch = rec.batch_size
        steps = max(2, round(flops / shape.flops_per_token() / (batch * shape.seq_len)))
        schedule = records.schedule(rec.schedule, steps, round(rec.warmup_fraction * steps), rec.decay_fraction or 0.2)
        runs[name] = RunSpec(run_id=f"truth-{name}", campaign=campaign.metadata.name, role="final", shape=shape,
                             tokens=steps * batch * shape.seq_len, batch_size=batch,
                             optimizer=OptimizerSpec(lr=rec.learning_rate),
                             schedule=schedule, mup=MupSpec(parameterization=spec.model.parameterization,
                                                            base_width=_base_width(status)),
                             eval=EvalSpec(log_points=4, every_steps=max(1, steps // 8), batches=val_batches(steps)),
                             data_path=data, output_dir=str(out / name),
                             seed=status.runs[0].seed if status.runs else 0, device="cpu")
        shapes[name] = {"params": shape.param_count(), "nLayer": shape.n_layer, "dModel": shape.d_model,
                        "tokens": runs[name].tokens, "flops": shape.flops_per_token() * runs[name].tokens}
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # each run is its own process
        losses = pool.map(lambda run: _train(run, Path(run.output_dir), args.threads), runs.values())
        measured = dict(zip(runs, losses, strict=True))
    if "recommended" in runs and args.flops_fraction != 1.0:
        predicted = fitted.loss(shapes["recommended"]["params"], runs["recommended"].tokens)  # type: ignore[union-attr]
    each = None
    if args.reconclude:
        found = _reconclude(status, spec, campaign.metadata.name)
        each = {name: found.predict(shapes[name]["params"], shapes[name]["tokens"]).model_dump(by_alias=True)
                for name in shapes}
        if "recommended" in each and args.flops_fraction == 1.0:
            made = each["recommended"]
            predicted, low, high = made["loss"], made["lossLow"], made["lossHigh"]
    best_name = min((k for k, v in measured.items() if v is not None), key=measured.__getitem__, default=None)
    best = None if best_name is None else measured[best_name]
    mine = measured.get("recommended")
    goals = {
        "recommended_within_1pct_of_best": None if len(measured) < 3 or best is None or mine is None
        else mine <= best * 1.01,
        "measured_inside_interval": None if low is None or mine is None else low <= mine <= high,
        "relative_error_at_most_3pct": None if predicted is None or mine is None
        else abs(predicted - mine) / mine <= 0.03,
    }
    result = {"campaign": campaign.metadata.name, "flops": flops, "flops_fraction": args.flops_fraction,
              "predicted": predicted, "interval": [low, high],
              "measured": measured, "shapes": shapes,
              "best": best_name,
              "learning_rate": rec.learning_rate, "basis": rec.basis, "predicted_each": each,
              "relative_error": None if predicted is None or mine is None else (predicted - mine) / mine,
              "goals": goals}
    print(json.dumps(result, indent=1) if args.json else _text(result))


def _reconclude(status: TrainingCampaignStatus, spec, name: str):
    """The conclusion this checkout's engine draws from the campaign's records, as at the ladder's end (default
    bootstrap and start grid, the campaign's seed and noise floor)."""
    floor_sd = status.noise_floor.relative_sd if status.noise_floor else None
    return conclude_ladder(status.runs, flops=final_budget(spec), prior=allocation_rule(spec.law),
                           seed=campaign_seed(name), floor_sd=floor_sd)


def _sizes(text: str) -> list[tuple[str, float]]:
    """``recommended,half,double`` or multiples of the recommended size, in the order given."""
    named = {"recommended": 1.0, "half": 0.5, "double": 2.0}
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item in named:
            out.append((item, named[item]))
            continue
        try:
            factor = float(item)
        except ValueError:
            sys.exit(f"--sizes: {item!r} is neither recommended, half, double nor a multiple such as 0.25")
        if factor <= 0:
            sys.exit(f"--sizes: {item!r} must be a positive multiple of the recommended size")
        out.append(("recommended" if factor == 1.0 else f"x{factor:g}", factor))
    return out


def _base_width(status: TrainingCampaignStatus) -> int:
    plan = status.plan
    assert plan is not None
    runs = plan.round1.runs or plan.ladder.runs
    return runs[0].shape.d_model


def _train(run: RunSpec, folder: Path, threads: int) -> float | None:
    """Train one run with the trainer (resumes if it was interrupted); its final validation loss."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.json"
    spec_path.write_text(run.model_dump_json(by_alias=True, indent=1))
    term = folder / "termination-log"
    if not term.is_file():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flopwise_trainer.cli", str(spec_path), "--termination-log",
                        str(term), "--threads", str(threads)], check=False, stdout=subprocess.DEVNULL)
        print(f"{run.run_id}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    summary = json.loads(term.read_text())
    return summary.get("finalValLoss")


def _text(result: dict) -> str:
    lines = [f"predicted {result['predicted']:.4f} [{result['interval'][0]}, {result['interval'][1]}]"]
    for name, loss in result["measured"].items():
        shape = result["shapes"][name]
        lines.append(f"  {name:<12} {shape['params']:>9,} params on {shape['tokens']:>11,} tokens: measured {loss}")
    lines += [f"  {goal}: {ok}" for goal, ok in result["goals"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
