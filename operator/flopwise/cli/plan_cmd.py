"""`flopwise validate`, `flopwise plan`, `flopwise size` and `flopwise crd`: everything before a cluster."""

from __future__ import annotations

import json
import sys

import click

from flopwise.cli import fmt

# Reference on-demand prices (dollars per GPU-hour) for `size --usd` when --price is not given. They are
# only a convenience for a quick answer: a campaign always states its own gpuPool.pricePerGpuHour.
REFERENCE_PRICE_PER_GPU_HOUR = {"A100-40GB": 1.30, "A100-80GB": 1.80, "H100-SXM": 2.50, "H100-PCIe": 2.20,
                                "H200": 3.50, "L4": 0.70, "L40S": 1.00, "A10G": 1.00, "B200": 5.00}


def _plan_of(path: str):
    from flopwise.api.load import load_campaign
    from flopwise.planning.plan import plan_campaign

    campaign = load_campaign(path)
    return campaign, plan_campaign(campaign.spec)


@click.command("validate")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
def validate(campaign_file: str) -> None:
    """Check a campaign file (schema, bounds, and that its budget can be planned) without a cluster."""
    _campaign, plan = _plan_of(campaign_file)
    click.echo(f"{campaign_file}: valid — {len(plan.all_runs())} runs planned, "
               f"{plan.planned_flops / plan.budget_flops:.0%} of the budget, target "
               f"{fmt.count(plan.target.params)} params on {fmt.count(plan.target.tokens)} tokens")
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)


@click.command("plan")
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the plan as JSON (the status.plan field)")
def plan(campaign_file: str, as_json: bool) -> None:
    """Show what flopwise would do with a campaign's budget: target, ladder, rounds, costs."""
    from flopwise.overview.model import target_loss_text

    campaign, result = _plan_of(campaign_file)
    if as_json:
        click.echo(json.dumps(result.model_dump(by_alias=True, mode="json"), indent=2))
        return
    t = result.target
    click.echo(f"campaign {campaign.metadata.name}: budget {fmt.flops(result.budget_flops)} FLOPs"
               f" ({fmt.usd(result.budget_usd)}), {result.binding} binds; margin {fmt.flops(result.margin_flops)}"
               f"; law {result.law}; peak {fmt.flops(result.peak_flops_per_gpu)} FLOP/s/GPU at MFU {result.mfu:g}")
    click.echo(f"target: {fmt.count(t.params)} params ({t.shape.n_layer} layers × {t.shape.d_model} wide, "
               f"{t.shape.n_head} heads) on {fmt.count(t.tokens)} tokens ({t.tokens_per_param:.1f} tokens/param)"
               f"; {fmt.flops(t.flops)} FLOPs, {t.gpu_hours:,.0f} GPU-hours, {fmt.usd(t.usd)}")
    click.echo(f"predicted loss: {target_loss_text(t, campaign.spec.model.vocab_size)}")
    rows = [[r.run_id, r.role, fmt.count(r.params), f"{r.shape.n_layer}×{r.shape.d_model}", fmt.count(r.tokens),
             str(r.steps), f"{r.learning_rate:.3g}" if r.learning_rate else "-", fmt.flops(r.flops),
             f"{r.gpu_hours:,.1f}", fmt.usd(r.usd)] for r in result.all_runs()]
    click.echo("")
    click.echo(fmt.table(rows, ["run", "role", "params", "shape", "tokens", "steps", "lr", "FLOPs", "GPU-h", "cost"]))
    click.echo("")
    phase_rows = [[name, f"{p.share:.0%}", fmt.flops(p.allotted_flops), fmt.flops(p.flops),
                   f"{p.flops / p.allotted_flops:.0%}" if p.allotted_flops else "-", str(len(p.runs)), fmt.usd(p.usd)]
                  for name, p in result.phases().items()]
    usable = result.budget_flops - result.margin_flops
    phase_rows.append(["total", "", fmt.flops(usable), fmt.flops(result.planned_flops),
                       f"{result.planned_flops / result.budget_flops:.0%} of budget", str(len(result.all_runs())),
                       fmt.usd(result.planned_usd)])
    click.echo(fmt.table(phase_rows, ["phase", "share", "allotted", "planned", "used", "runs", "cost"]))
    for name, p in result.phases().items():
        for note in p.notes:
            click.echo(f"{name}: {note}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}")
    for dropped in result.dropped:
        click.echo(f"dropped: {dropped}")


@click.command("size")
@click.option("--flops", type=float, help="compute budget in FLOPs")
@click.option("--usd", type=float, help="compute budget in dollars (with --gpu, --mfu, --price)")
@click.option("--gpu", default="H100-SXM", show_default=True, help="GPU type for --usd")
@click.option("--peak-flops", type=float, help="peak FLOP/s per GPU (for a GPU not in the table)")
@click.option("--mfu", type=float, default=0.4, show_default=True, help="model FLOPs utilisation for --usd")
@click.option("--price", type=float, help="dollars per GPU-hour (default: a reference on-demand price)")
@click.option("--law", default="chinchilla-3", show_default=True,
              type=click.Choice(["chinchilla-3", "chinchilla-3-rounded", "chinchilla-1", "chinchilla-2", "epoch"]))
@click.option("--json", "as_json", is_flag=True)
def size(flops: float | None, usd: float | None, gpu: str, peak_flops: float | None, mfu: float,
         price: float | None, law: str, as_json: bool) -> None:
    """Compute-optimal parameters and tokens for a budget under a published law."""
    from flopwise.contract import GPU_ALIASES, gpu_peak_flops
    from flopwise.planning.budget import Pool
    from flopwise.planning.laws import allocation_rule
    from flopwise.planning.priors import PUBLISHED_DATA

    if (flops is None) == (usd is None):
        raise click.UsageError("give exactly one of --flops or --usd")
    for name, value in (("--flops", flops), ("--usd", usd), ("--price", price), ("--peak-flops", peak_flops)):
        if value is not None and not value > 0:
            raise click.BadParameter(f"must be positive, got {value}", param_hint=name)
    if not 0 < mfu <= 1:
        raise click.BadParameter(f"must be in (0, 1], got {mfu}", param_hint="--mfu")
    extra: dict[str, float | str] = {}
    if usd is not None:
        peak = peak_flops or gpu_peak_flops(gpu)
        if peak is None:
            raise click.BadParameter(f"unknown GPU {gpu!r}: give --peak-flops", param_hint="--gpu")
        canonical = GPU_ALIASES.get(gpu, gpu)
        if price is None:
            if canonical not in REFERENCE_PRICE_PER_GPU_HOUR:
                raise click.BadParameter(f"no reference price for {gpu!r}: give --price", param_hint="--price")
            price = REFERENCE_PRICE_PER_GPU_HOUR[canonical]
        pool = Pool(peak_flops=peak, mfu=mfu, price_per_gpu_hour=price)
        flops = pool.flops_for_usd(usd)
        extra = {"usd": usd, "gpu": canonical, "mfu": mfu, "price_per_gpu_hour": price,
                 "gpu_hours": pool.gpu_hours(flops)}
    assert flops is not None
    optimum = allocation_rule(law).allocate(flops)
    result: dict[str, float | str | None] = {
        "params": optimum.params, "tokens": optimum.tokens, "flops": flops,
        "tokens_per_param": optimum.tokens_per_param, "loss": optimum.loss, "law": law, **extra,
    }
    if as_json:
        click.echo(json.dumps(result))
        return
    data = PUBLISHED_DATA.get(law)  # a published law's loss is in its own tokenizer's units, on its own data
    loss = (f", loss {optimum.loss:.3f} per token of {data.describe() if data else law + ' data'}"
            if optimum.loss is not None else "")
    click.echo(f"{fmt.flops(flops)} FLOPs under {law}: {fmt.count(optimum.params)} params on "
               f"{fmt.count(optimum.tokens)} tokens ({optimum.tokens_per_param:.1f} tokens/param){loss}")


@click.command("crd")
@click.option("--cel", is_flag=True, help="add CEL cross-field rules (needs Kubernetes 1.25+)")
@click.option("--reference", is_flag=True, help="print the field reference (Markdown) instead")
def crd(cel: bool, reference: bool) -> None:
    """Print the TrainingCampaign CRD generated from the API models."""
    from flopwise.api.crd import crd_yaml, reference_markdown

    sys.stdout.write(reference_markdown() if reference else crd_yaml(cel=cel))


COMMANDS = (validate, plan, size, crd)
