"""Fast Forward vs plain AdamW for LoRA fine-tuning, counted in FLOPs (Rahamim et al. 2024, arXiv:2409.04206).

Pre-trains a small model on the standard library's top-level modules, then LoRA-fine-tunes it on a shifted
distribution (a different part of the library, by default ``encodings/*``) twice with the same spec: plain
AdamW, and AdamW with Fast Forward stages. Reports the FLOPs each needs to reach plain AdamW's final loss on
the tiny set (Fast Forward's own 32 held-out examples) and on the evaluation windows of the validation split
(which the tiny set never overlaps). Fast Forward's FLOPs
include every extra forward pass of its line searches; the benchmark's own measurements are not counted.

    .venv/bin/python benchmarks/fast_forward_bench.py [--steps 100] [--lr 1e-3] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from flopwise.contract import RunSpec
from flopwise.data import prepare_stdlib
from flopwise_trainer.distributed import DistInfo
from flopwise_trainer.train import Trainer, execute


def curve(spec: RunSpec) -> list[tuple[int, float, float, float]]:
    """(step, FLOPs, tiny-set loss, held-out loss) after every optimiser step (and its Fast Forward stage)."""
    trainer = Trainer(spec, DistInfo(), torch.device("cpu"))
    x, y = trainer.batches.tiny_set(spec.lora.ff_val_examples, spec.eval.batches)
    tiny = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    val = trainer.batches.val_batches(spec.eval.batches, 32)
    points = []
    for step in range(trainer.total_steps):
        trainer.advance(step)
        points.append((trainer.step, trainer.train_flops(), trainer._mean_loss(tiny), trainer._mean_loss(val)))
    ff = trainer.fast_forward
    if ff:
        print(f"  fast forward: {len(ff.stages)} stages, {ff.accepted_steps} accepted steps, "
              f"{ff.evaluations} tiny-set evaluations, {trainer.ff_flops:.3g} FLOPs")
    return points


def flops_to_reach(points: list[tuple[int, float, float, float]], target: float, column: int) -> tuple[int, float]:
    for p in points:
        if p[column] <= target:
            return p[0], p[1]
    return -1, float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--lr", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--finetune-on", default="encodings/*")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ffbench-"))
    shape = {"nLayer": 2, "dModel": 64, "nHead": 4, "vocabSize": 256, "seqLen": 128}

    if not (work / "pre" / "meta.json").exists():
        prepare_stdlib(work / "pre", max_bytes=2_000_000, exclude=["*/*"])  # top-level modules only
    if not (work / "ft" / "meta.json").exists():
        prepare_stdlib(work / "ft", max_bytes=1_000_000, include=[args.finetune_on])
    pre = RunSpec.model_validate({
        "runId": "ffbench-pretrain", "shape": shape, "tokens": args.pretrain_steps * 16 * 128, "batchSize": 16,
        "optimizer": {"lr": 1e-2}, "schedule": {"kind": "cosine", "warmupSteps": 20},
        "eval": {"logPoints": 4, "batches": 2}, "dataPath": str(work / "pre"), "outputDir": str(work / "pre_out")})
    t = time.perf_counter()
    base = execute(pre)
    print(f"pretrained {shape} for {base.steps} steps: val loss {base.final_val_loss:.3f} "
          f"({time.perf_counter() - t:.0f} s)")

    rows = []
    for lr in args.lr:
        runs = {}
        for ff in (False, True):
            spec = RunSpec.model_validate({
                "runId": f"ffbench-{'ff' if ff else 'plain'}", "shape": shape, "tokens": args.steps * args.batch * 128,
                "batchSize": args.batch, "optimizer": {"lr": lr, "weightDecay": 0.0}, "schedule": {"kind": "constant"},
                "eval": {"logPoints": 0, "batches": 1}, "dataPath": str(work / "ft"),
                "outputDir": str(work / f"ft_{lr}_{ff}"),
                "lora": {"baseCheckpoint": str(work / "pre_out"), "rank": args.rank, "alpha": 2.0 * args.rank,
                         "fastForward": ff}})
            t = time.perf_counter()
            print(f"lr {lr:g} {'fast forward' if ff else 'plain AdamW'}:")
            runs[ff] = curve(spec)
            print(f"  {time.perf_counter() - t:.0f} s; final tiny {runs[ff][-1][2]:.4f} val {runs[ff][-1][3]:.4f}")
        plain, fast = runs[False], runs[True]
        for column, label in ((2, "tiny-set"), (3, "held-out")):
            target = plain[-1][column]
            step, flops = flops_to_reach(fast, target, column)
            rows.append((lr, label, target, plain[-1][1], step, flops))

    print(f"\n| LoRA lr | loss measured on | plain AdamW final loss | plain FLOPs ({args.steps} steps) "
          "| FF steps to reach it | FF FLOPs (incl. line searches) | FLOPs saved |")
    print("|---|---|---|---|---|---|---|")
    for lr, label, target, plain_flops, step, flops in rows:
        saved = f"{1 - flops / plain_flops:.0%}" if step > 0 else "not reached"
        print(f"| {lr:g} | {label} | {target:.4f} | {plain_flops:.3g} | {step if step > 0 else '-'} | "
              f"{flops:.3g} | {saved} |")


if __name__ == "__main__":
    main()
