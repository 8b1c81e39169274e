"""The trainer's model: exact parameter counts from ModelShape, muP vs SP, and the muP coordinate check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flopwise.contract import ModelShape, MupSpec, OptimizerSpec
from flopwise.data import open_dataset, prepare_stdlib, step_rng
from flopwise_trainer.model import Transformer, count_params
from flopwise_trainer.param_groups import build_param_groups

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def stdlib_data(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("stdlib")
    prepare_stdlib(out, max_bytes=300_000)
    return open_dataset(out)


@pytest.mark.parametrize("kwargs", [
    dict(n_layer=2, d_model=32, n_head=2, vocab_size=256, seq_len=64),
    dict(n_layer=3, d_model=48, n_head=3, vocab_size=300, seq_len=32, tied_embeddings=False),
    dict(n_layer=1, d_model=40, n_head=4, vocab_size=97, seq_len=16, positional="learned"),
    dict(n_layer=2, d_model=64, n_head=8, vocab_size=512, seq_len=128, d_ff=96, positional="learned",
         tied_embeddings=False),
    dict(n_layer=4, d_model=16, n_head=1, vocab_size=256, seq_len=8, d_ff=24),
])
@pytest.mark.parametrize("parameterization", ["mup", "sp"])
def test_parameter_count_matches_shape(kwargs: dict, parameterization: str) -> None:
    shape = ModelShape(**kwargs)
    model = Transformer(shape, MupSpec(parameterization=parameterization))
    assert count_params(model) == shape.param_count()
    idx = torch.zeros(2, shape.seq_len, dtype=torch.long)
    logits, loss = model(idx, idx)
    assert logits.shape == (2, shape.seq_len, shape.vocab_size)
    assert loss is not None and math.isfinite(loss.item())


def test_mup_and_sp_differ_where_they_should() -> None:
    shape = ModelShape(n_layer=1, d_model=128, n_head=4, vocab_size=64, seq_len=16)
    mup = Transformer(shape, MupSpec(base_width=32, output_mult=2.0))
    sp = Transformer(shape, MupSpec(parameterization="sp", base_width=32))
    assert mup.output_scale == pytest.approx(2.0 * 32 / 128) and sp.output_scale == 1.0
    assert mup.blocks[0].attn.scale == pytest.approx(1 / 32) and sp.blocks[0].attn.scale == pytest.approx(32**-0.5)
    # init: hidden matrices std 0.02/sqrt(4) under muP, 0.02 under SP; embeddings 0.02 in both
    assert mup.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert sp.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert mup.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    opt = OptimizerSpec(lr=1e-2)
    groups = {g["name"]: g for g in build_param_groups(mup, opt)}
    # hidden matrices: LR × base/width; the (tied) embedding keeps the base LR; gains are not decayed
    assert {k: g["lr_mult"] for k, g in groups.items()} == {"hidden": 0.25, "matrix": 1.0, "vector": 1.0}
    assert len(groups["hidden"]["params"]) == 4 and groups["matrix"]["params"] == [mup.wte.weight]
    assert groups["vector"]["weight_decay"] == 0.0 and groups["hidden"]["lr"] == pytest.approx(2.5e-3)
    sp_mults = {g["name"]: g["lr_mult"] for g in build_param_groups(sp, opt)}
    assert set(sp_mults.values()) == {1.0}


def _activation_scales(width: int, parameterization: str, data, seed: int, steps: int = 5) -> dict[str, float]:
    torch.manual_seed(seed)
    shape = ModelShape(n_layer=2, d_model=width, n_head=4, vocab_size=256, seq_len=64)
    model = Transformer(shape, MupSpec(parameterization=parameterization, base_width=32))
    lr = 1e-2
    opt = torch.optim.AdamW(build_param_groups(model, OptimizerSpec(lr=lr, weight_decay=0)), lr=lr)
    for step in range(steps):
        w = torch.from_numpy(data.train.sample(8, 65, step_rng(seed, step)))
        _, loss = model(w[:, :-1], w[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    scales: dict[str, float] = {}
    hooks = [block.register_forward_hook(
        lambda _m, inp, out, k=k: scales.__setitem__(f"block{k}", (out - inp[0]).abs().mean().item()))
        for k, block in enumerate(model.blocks)]
    w = torch.from_numpy(data.val.evenly_spaced(8, 65))
    with torch.no_grad():
        logits, _ = model(w[:, :-1])
    for h in hooks:
        h.remove()
    scales["logits"] = logits.abs().mean().item()
    return scales


def test_mup_coordinate_check(stdlib_data) -> None:
    """After a few Adam steps at one LR, activation scales stay flat across widths under muP and grow under SP.

    The slope of log2(mean |activation|) against log2(width), seed-averaged, separates them: measured here
    about 0.0–0.1 for muP and 0.7 (logits) to 1.9 (block outputs) for SP."""
    widths = [32, 64, 128, 256]
    slopes = {}
    for param in ("mup", "sp"):
        per_width = []
        for width in widths:
            runs = [_activation_scales(width, param, stdlib_data, seed) for seed in range(3)]
            per_width.append({k: float(np.mean([r[k] for r in runs])) for k in runs[0]})
        slopes[param] = {k: float(np.polyfit(np.log2(widths), np.log2([s[k] for s in per_width]), 1)[0])
                         for k in per_width[0]}
    for name, slope in slopes["mup"].items():
        assert abs(slope) < 0.25, (name, slopes)
    for name, slope in slopes["sp"].items():
        assert slope > 0.5, (name, slopes)
    assert min(slopes["sp"][k] for k in ("block0", "block1")) > 1.0, slopes
