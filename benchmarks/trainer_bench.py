"""Trainer throughput vs a minimal reference loop, on a ladder of shapes (CPU here; any device it finds).

The reference is the plainest loop that trains the same model on the same batches: sample windows, forward,
``zero_grad``, backward, ``torch.optim.AdamW(model.parameters())`` step — no schedule, clipping, muP groups,
divergence checks, evaluation or checkpoints. The trainer side is the real ``Trainer`` (built from a
``RunSpec``) running its own optimiser step, ``Trainer.advance`` — the loop body ``execute`` runs between
evaluations. Steps of the two alternate one by one and each side keeps the median step time, so that load from
other processes on shared cores hits both alike. MFU uses the contract's exact FLOPs per token and the peak
from ``hardware.peak_flops``; on CPU that is a measured fp32 matmul rate, re-measured between steps (median)
for the same reason.

    .venv/bin/python benchmarks/trainer_bench.py [--threads 2] [--steps-scale 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flopwise.contract import ModelShape, MupSpec, RunSpec
from flopwise.data import open_dataset, prepare_stdlib, step_rng
from flopwise_trainer.distributed import DistInfo
from flopwise_trainer.hardware import device_name, measure_cpu_matmul_flops, peak_flops
from flopwise_trainer.model import Transformer
from flopwise_trainer.train import Trainer

LADDER = [(32, 2, 60), (64, 3, 30), (96, 4, 20), (128, 4, 16)]  # width, layers, measured steps per side
SEQ, BATCH, VOCAB = 256, 16, 256
WARMUP = 3


def shape_for(width: int, layers: int) -> ModelShape:
    return ModelShape(n_layer=layers, d_model=width, n_head=max(1, width // 32), vocab_size=VOCAB, seq_len=SEQ)


class Reference:
    """The minimal loop, one step per call."""

    def __init__(self, shape: ModelShape, data: Path, device: torch.device):
        torch.manual_seed(0)
        self.model = Transformer(shape, MupSpec()).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.ds, self.device = open_dataset(data), device

    def step(self, step: int) -> None:
        w = torch.from_numpy(self.ds.train.sample(BATCH, SEQ + 1, step_rng(0, step))).to(self.device)
        _, loss = self.model(w[:, :-1], w[:, 1:])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        loss.item()


def make_trainer(shape: ModelShape, data: Path, out: Path, steps: int, device: torch.device) -> Trainer:
    spec = RunSpec.model_validate({
        "runId": "bench", "shape": shape.model_dump(by_alias=True), "tokens": steps * BATCH * SEQ,
        "batchSize": BATCH, "optimizer": {"lr": 1e-3}, "schedule": {"kind": "cosine", "warmupSteps": 2},
        "eval": {"logPoints": 0, "batches": 1}, "dataPath": str(data), "outputDir": str(out)})
    return Trainer(spec, DistInfo(), device)


def timed(fn, step: int) -> float:
    t = time.perf_counter()
    fn(step)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    work = Path(tempfile.mkdtemp(prefix="trainer-bench-"))
    prepare_stdlib(work / "data", max_bytes=4_000_000)
    peak, source = peak_flops(device, None)
    print(f"device: {device_name(device)}; peak {peak:.3g} FLOP/s ({source}); seq {SEQ}, batch {BATCH}, "
          f"vocab {VOCAB}, fp32", flush=True)
    print("\n| width × layers | params | reference tokens/s | trainer tokens/s | trainer / reference | trainer MFU |")
    print("|---|---|---|---|---|---|", flush=True)
    for width, layers, steps in LADDER:
        steps = max(4, round(steps * args.steps_scale))
        shape = shape_for(width, layers)
        ref = Reference(shape, work / "data", device)
        trainer = make_trainer(shape, work / "data", work / f"run-{width}", WARMUP + steps, device)
        ref_times, trainer_times, peaks = [], [], []
        for step in range(WARMUP + steps):
            first, second = (ref.step, trainer.advance) if step % 2 else (trainer.advance, ref.step)
            a, b = timed(first, step), timed(second, step)
            if step >= WARMUP:
                (ref_times if first == ref.step else trainer_times).append(a)
                (trainer_times if first == ref.step else ref_times).append(b)
                if device.type == "cpu":  # the CPU "peak" is re-measured between steps: the load varies
                    peaks.append(measure_cpu_matmul_flops(seconds=0.02))
        tokens = BATCH * SEQ
        ref_tps = tokens / statistics.median(ref_times)
        mine = tokens / statistics.median(trainer_times)
        row_peak = statistics.median(peaks) if peaks else peak
        mfu = shape.flops_per_token() * mine / row_peak if row_peak else float("nan")
        print(f"| {width} × {layers} | {shape.param_count():,} | {ref_tps:,.0f} | {mine:,.0f} | "
              f"{mine / ref_tps:.2f}× | {mfu:.1%} |", flush=True)


if __name__ == "__main__":
    main()
