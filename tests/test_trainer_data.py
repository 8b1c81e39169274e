"""Token shards: format, deterministic sampling, the held-out split, and `flopwise data stdlib`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flopwise.cli import data_cmd
from flopwise.data import open_dataset, prepare_stdlib, stdlib_files, step_rng, write_shards
from flopwise_trainer.data import Batches


def test_write_and_read_shards_round_trip(tmp_path) -> None:
    tokens = np.arange(1000) % 300
    meta = write_shards(tokens, tmp_path, vocab_size=300, val_fraction=0.1, shard_tokens=256)
    assert meta["dtype"] == "uint16" and meta["tokens"] == {"train": 900, "val": 100}
    ds = open_dataset(tmp_path)
    assert ds.vocab_size == 300 and ds.train.tokens == 900 and ds.val.tokens == 100
    assert len(ds.train.arrays) == 4  # 256+256+256+132
    np.testing.assert_array_equal(np.concatenate([np.asarray(a) for a in ds.train.arrays]), tokens[:900])
    np.testing.assert_array_equal(np.asarray(ds.val.arrays[0]), tokens[900:])
    raw = (tmp_path / "train-00000.bin").read_bytes()
    assert np.frombuffer(raw, dtype="<u2")[:3].tolist() == [0, 1, 2]  # flat little-endian, no header


def test_large_vocab_uses_uint32_and_ids_are_checked(tmp_path) -> None:
    meta = write_shards(np.array([0, 70_000, 5, 6, 7]), tmp_path / "a", vocab_size=70_001, val_fraction=0.2)
    assert meta["dtype"] == "uint32"
    assert open_dataset(tmp_path / "a").train.window(0, 0, 2).tolist() == [0, 70_000]
    with pytest.raises(ValueError):
        write_shards(np.array([0, 300]), tmp_path / "b", vocab_size=256)


def test_sampling_is_a_pure_function_of_seed_and_step_and_never_touches_val(tmp_path) -> None:
    # train tokens are all < 100, validation tokens all >= 100: any val token in a batch would show
    tokens = np.concatenate([np.arange(4000) % 100, 100 + np.arange(500) % 50])
    write_shards(tokens, tmp_path, vocab_size=256, val_fraction=500 / 4500, shard_tokens=1000)
    ds = open_dataset(tmp_path)
    a = ds.train.sample(64, 33, step_rng(7, 12))
    assert np.array_equal(a, ds.train.sample(64, 33, step_rng(7, 12)))
    assert not np.array_equal(a, ds.train.sample(64, 33, step_rng(7, 13)))
    assert not np.array_equal(a, ds.train.sample(64, 33, step_rng(8, 12)))
    for step in range(50):
        assert ds.train.sample(16, 33, step_rng(0, step)).max() < 100
    assert ds.val.evenly_spaced(8, 33).min() >= 100


def test_ranks_take_disjoint_slices_of_one_global_batch(tmp_path) -> None:
    write_shards(np.arange(5000) % 256, tmp_path, vocab_size=256)
    cpu = torch.device("cpu")
    whole = Batches(tmp_path, seq_len=16, batch_size=8, seed=3, vocab_size=256, device=cpu)
    ranks = [Batches(tmp_path, seq_len=16, batch_size=8, seed=3, vocab_size=256, device=cpu, rank=r, world_size=2)
             for r in range(2)]
    (x, _), = whole.train_step(5, micro_batch=8)
    parts = [b.train_step(5, micro_batch=2) for b in ranks]  # 2 micro-batches of 2 per rank
    stitched = torch.cat([xb for part in parts for xb, _ in part])
    assert torch.equal(stitched, x)
    with pytest.raises(ValueError, match="vocabulary"):
        Batches(tmp_path, seq_len=16, batch_size=8, seed=0, vocab_size=128, device=cpu)


def test_fast_forward_tiny_set_is_held_out_and_never_read_by_evaluation(tmp_path) -> None:
    """Every token is its own position (train 0..29999, validation 30000..35999 in three shards), so a window's
    tokens say exactly where it was read: the tiny set must lie in the validation split and share no token with
    the windows evaluation reads; under DDP the ranks split it without loss or overlap."""
    n_train, n_val = 30_000, 6_000
    write_shards(np.arange(n_train + n_val), tmp_path, vocab_size=n_train + n_val, val_fraction=n_val / 36_000,
                 shard_tokens=2_000)
    cpu = torch.device("cpu")

    def batches(seed: int = 0, rank: int = 0, world: int = 1) -> Batches:
        return Batches(tmp_path, seq_len=32, batch_size=8, seed=seed, vocab_size=n_train + n_val, device=cpu,
                       rank=rank, world_size=world)

    x, y = batches().tiny_set(32, eval_batches=4)
    assert x.shape == y.shape == (32, 32) and torch.equal(x[:, 1:], y[:, :-1])
    windows = torch.cat([x, y[:, -1:]], dim=1)
    assert int(windows.min()) >= n_train  # held out: validation split only
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(32, 32, dtype=windows.dtype))  # inside a shard
    read_by_eval = {int(t) for xb, yb in batches().val_batches(4, 8) for t in torch.cat([xb, yb[:, -1:]], 1).flatten()}
    assert len(read_by_eval) > 1_000 and read_by_eval.isdisjoint(int(t) for t in windows.flatten())
    assert len({int(w[0]) for w in windows}) == 32  # 32 different windows, spread over the split
    assert int(windows[:, 0].max() - windows[:, 0].min()) > n_val // 2
    assert torch.equal(batches(seed=9).tiny_set(32, eval_batches=4)[0], x)  # the same text for every run
    shares = [batches(rank=r, world=2).tiny_set(32, eval_batches=4)[0] for r in range(2)]
    assert [len(s) for s in shares] == [16, 16]
    assert sorted(map(tuple, torch.cat(shares).tolist())) == sorted(map(tuple, x.tolist()))
    # Evaluation that reads (almost) the whole split leaves no room: a clear error, not an overlap.
    with pytest.raises(ValueError, match="tiny set needs 32"):
        batches().tiny_set(32, eval_batches=24)


def test_open_dataset_rejects_missing_and_truncated(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "nope")
    write_shards(np.arange(100) % 256, tmp_path, vocab_size=256)
    (tmp_path / "train-00000.bin").write_bytes(b"\0\0")
    with pytest.raises(ValueError, match="bytes long"):
        open_dataset(tmp_path)


def test_stdlib_corpus_is_deterministic_and_filterable(tmp_path) -> None:
    a = prepare_stdlib(tmp_path / "a", max_bytes=50_000)
    b = prepare_stdlib(tmp_path / "b", max_bytes=50_000)
    assert a["tokens"]["train"] + a["tokens"]["val"] == 50_000
    assert (tmp_path / "a" / "train-00000.bin").read_bytes() == (tmp_path / "b" / "train-00000.bin").read_bytes()
    assert b["vocabSize"] == 256
    email = stdlib_files(include=["email/*"])
    assert email and all("/email/" in p.as_posix() for p in email)
    assert not any("site-packages" in p.as_posix() for p in stdlib_files())


def test_flopwise_data_stdlib_command(tmp_path) -> None:
    result = CliRunner().invoke(data_cmd.command, ["stdlib", str(tmp_path / "d"), "--max-bytes", "20000",
                                                   "--val-fraction", "0.1"])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["tokens"] == {"train": 18_000, "val": 2_000}
    assert "18,000 train" in result.output
    # and through the installed `flopwise` console script
    script = Path(sys.executable).parent / "flopwise"
    done = subprocess.run([str(script), "data", "stdlib", str(tmp_path / "e"), "--max-bytes", "5000"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert open_dataset(tmp_path / "e").train.tokens == 4750


def test_flopwise_data_does_not_import_torch() -> None:
    code = "import sys, flopwise.data, flopwise.cli.data_cmd; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
