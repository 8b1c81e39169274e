"""LoRA fine-tuning and Fast Forward: frozen base, line-search semantics, and steps saved on a tiny fine-tune."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flopwise.contract import ModelShape, RunSpec
from flopwise.data import prepare_stdlib
from flopwise_trainer import checkpoint as ckpt
from flopwise_trainer.fast_forward import FastForward
from flopwise_trainer.lora import apply_lora, lora_param_count
from flopwise_trainer.model import Transformer
from flopwise_trainer.train import execute

torch.set_num_threads(1)
SHAPE = {"nLayer": 2, "dModel": 32, "nHead": 2, "vocabSize": 256, "seqLen": 64}


def test_fast_forward_repeats_the_last_update_until_the_loss_rises_then_rolls_back() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    ff = FastForward([p], tiny_loss=lambda: float((p.detach() - 10.0).pow(2).sum()), interval=3, burn_in=1)
    for step in range(4):
        ff.before_step(step)
        with torch.no_grad():
            p.add_(0.5)  # the "optimiser" update ΔW = 0.5
        report = ff.after_step(step + 1)
        assert (report is not None) == (step + 1 in (1, 4))
    # after step 1: p=0.5 → FF to 10.0 (19 accepted), the 20th (10.5) is worse and rolled back;
    # steps 2–4 move to 11.5; FF at step 4: the repeat (12.0) is worse at once, rolled back.
    assert [s.accepted for s in ff.stages] == [19, 0]
    assert p.item() == pytest.approx(11.5) and ff.evaluations == 21 + 2


def test_lora_wraps_block_linears_and_freezes_the_base() -> None:
    shape = ModelShape.model_validate(SHAPE)
    model = Transformer(shape)
    adapters = apply_lora(model, rank=4, alpha=8.0)
    assert len(adapters) == 4 * shape.n_layer
    d, ff = shape.d_model, shape.ffn_width
    assert lora_param_count(model) == shape.n_layer * 4 * ((d + 3 * d) + (d + d) + (d + ff) + (ff + d))
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    x = torch.randint(0, 256, (2, 64))
    base = Transformer(shape)
    base.load_state_dict({k.replace(".base.", "."): v for k, v in model.state_dict().items() if "lora_" not in k})
    assert torch.allclose(model(x)[0], base(x)[0])  # B = 0: the adapted model starts as the base model


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("ff")
    prepare_stdlib(root / "pre", max_bytes=400_000, exclude=["*/*"])
    prepare_stdlib(root / "ft", max_bytes=200_000, include=["encodings/*"])
    spec = RunSpec.model_validate({
        "runId": "base", "shape": SHAPE, "tokens": 150 * 16 * 64, "batchSize": 16, "optimizer": {"lr": 1e-2},
        "schedule": {"kind": "cosine", "warmupSteps": 10}, "eval": {"logPoints": 3, "batches": 2},
        "dataPath": str(root / "pre"), "outputDir": str(root / "base")})
    assert execute(spec).status == "succeeded"
    return root / "base", root / "ft", root


def _finetune(base: Path, data: Path, out: Path, fast_forward: bool, steps: int = 36) -> dict:
    spec = RunSpec.model_validate({
        "runId": "ft", "shape": SHAPE, "tokens": steps * 32 * 64, "batchSize": 32,
        "optimizer": {"lr": 1e-3, "weightDecay": 0.0}, "schedule": {"kind": "constant"},
        "eval": {"logPoints": 0, "everySteps": 6, "batches": 2}, "dataPath": str(data), "outputDir": str(out),
        "lora": {"baseCheckpoint": str(base), "rank": 8, "alpha": 16, "fastForward": fast_forward}})
    summary = execute(spec)
    assert summary.status == "succeeded", summary.exit_reason
    return json.loads((out / "result.json").read_text())


def test_fast_forward_saves_steps_on_a_tiny_lora_finetune(pretrained) -> None:
    base, data, root = pretrained
    base_weights = ckpt.load(base / "best.pt")["model"]
    plain = _finetune(base, data, root / "plain", fast_forward=False)
    fast = _finetune(base, data, root / "fast", fast_forward=True)
    ff = fast["fastForward"]
    assert ff["acceptedSteps"] > 0 and len(ff["stages"]) == 6  # after steps 6, 12, …, 36
    assert all(s["end_loss"] <= s["start_loss"] for s in ff["stages"])  # never keeps a worsening step
    plain_curve = {p["step"]: p["val_loss"] for p in plain["history"]}
    fast_curve = {p["step"]: p["val_loss"] for p in fast["history"]}
    assert fast_curve[36] < plain_curve[36]
    # steps saved: Fast Forward reaches plain AdamW's final held-out loss in fewer Adam steps
    reached = min(step for step, loss in fast_curve.items() if loss <= plain_curve[36])
    assert reached < 36
    # its extra forward passes are counted in the run's FLOPs
    assert fast["summary"]["flops"] == pytest.approx(plain["summary"]["flops"] + ff["flops"])
    assert ff["flops"] == pytest.approx(ff["evaluations"] * 32 * 64 * fast["forwardFlopsPerToken"])
    # the base weights stayed frozen
    tuned = ckpt.load(root / "fast" / "checkpoint.pt")["model"]
    assert torch.equal(tuned["blocks.0.attn.qkv.base.weight"], base_weights["blocks.0.attn.qkv.weight"])
    assert torch.equal(tuned["wte.weight"], base_weights["wte.weight"])


def test_missing_base_checkpoint_fails_cleanly(tmp_path: Path) -> None:
    prepare_stdlib(tmp_path / "d", max_bytes=20_000)
    spec = RunSpec.model_validate({
        "runId": "ft", "shape": SHAPE, "tokens": 640, "batchSize": 2, "optimizer": {"lr": 1e-3},
        "dataPath": str(tmp_path / "d"), "outputDir": str(tmp_path / "o"),
        "lora": {"baseCheckpoint": str(tmp_path / "nope")}})
    summary = execute(spec)
    assert summary.status == "failed" and summary.exit_reason.startswith("base checkpoint")


DDP_PROBE = """
import gc, json, sys
import torch
import torch.distributed as dist
from flopwise.contract import RunSpec
from flopwise_trainer import distributed
from flopwise_trainer.lora import lora_parameters
from flopwise_trainer.train import Trainer


def probe(spec, info, device):
    \"\"\"Everything that holds the process group (the DDP model) is local here and freed on return, before the
    session destroys the group, as in the trainer's own execute(): one held by a module global is torn down in
    interpreter finalization, where gloo aborted a rank now and then ('terminate called without an active
    exception': once in CI, once in ~100 runs here).\"\"\"
    trainer = Trainer(spec, info, device)
    ff = trainer.fast_forward
    ran = {"tokens": 0, "tiny": False}  # tokens this rank really forwards inside Fast Forward's tiny-set passes
    forward, tiny_loss = trainer.model.forward, ff.tiny_loss

    def counting_forward(x, *args, **kwargs):
        ran["tokens"] += x.numel() if ran["tiny"] else 0
        return forward(x, *args, **kwargs)

    def watched_tiny_loss():
        ran["tiny"] = True
        try:
            return tiny_loss()
        finally:
            ran["tiny"] = False

    trainer.model.forward, ff.tiny_loss = counting_forward, watched_tiny_loss
    trainer.run()
    work = torch.tensor([float(ran["tokens"])], dtype=torch.float64)
    dist.all_reduce(work)
    params = torch.cat([p.detach().flatten() for p in lora_parameters(trainer.model)])
    every = [torch.empty_like(params) for _ in range(info.world_size)]
    dist.all_gather(every, params)
    stages = [None] * info.world_size
    dist.all_gather_object(stages, [(s.step, s.accepted, s.start_loss, s.end_loss) for s in ff.stages])
    return {"world": info.world_size, "rank_tokens": ran["tokens"], "tokens_run": work.item(),
            "ff_flops": trainer.ff_flops, "forward_fpt": trainer.forward_fpt, "evaluations": ff.evaluations,
            "params_alike": all(torch.equal(p, every[0]) for p in every), "stages": stages}


def main():
    torch.set_num_threads(1)
    spec = RunSpec.model_validate_json(open(sys.argv[1]).read())
    with distributed.session("cpu") as (info, device):
        found = probe(spec, info, device)
        gc.collect()  # the wrapped forward is a reference cycle through the model: free it here, not at exit
    if info.is_main:
        json.dump(found, open(sys.argv[2], "w"))


main()
"""


def test_fast_forward_under_ddp_shards_the_tiny_set_and_counts_what_ran(pretrained, tmp_path: Path) -> None:
    """Two gloo ranks: each runs half of the tiny set per pass, the FLOPs counted are exactly the passes all
    ranks ran together, and both ranks take the same accept/stop decisions (their adapters stay identical)."""
    base, data, _ = pretrained
    spec = RunSpec.model_validate({
        "runId": "ft-ddp", "shape": SHAPE, "tokens": 12 * 32 * 64, "batchSize": 32,
        "optimizer": {"lr": 1e-3, "weightDecay": 0.0}, "schedule": {"kind": "constant"},
        "eval": {"logPoints": 0, "batches": 2}, "dataPath": str(data), "outputDir": str(tmp_path / "out"),
        "device": "cpu", "lora": {"baseCheckpoint": str(base), "rank": 8, "alpha": 16, "fastForward": True}})
    (tmp_path / "spec.json").write_text(spec.model_dump_json(by_alias=True))
    (tmp_path / "probe.py").write_text(DDP_PROBE)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    done = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(tmp_path / "probe.py"),
                           str(tmp_path / "spec.json"), str(tmp_path / "probe.json")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads((tmp_path / "probe.json").read_text())
    tiny_set_tokens = 32 * 64  # ffValExamples windows of seqLen tokens
    assert probe["world"] == 2 and probe["evaluations"] > 2
    assert probe["tokens_run"] == probe["evaluations"] * tiny_set_tokens  # one tiny set per pass, over all ranks
    assert probe["rank_tokens"] == probe["tokens_run"] / 2  # … each rank ran half of it
    assert probe["ff_flops"] == pytest.approx(probe["tokens_run"] * probe["forward_fpt"])  # counted = ran
    assert probe["params_alike"] and probe["stages"][0] == probe["stages"][1] and len(probe["stages"][0]) == 2
