"""Token shards: the on-disk format both images share (numpy only — the operator image has no torch).

A dataset is a folder holding flat little-endian token files (``uint16`` when the vocabulary fits, else
``uint32``) and one JSON sidecar, ``meta.json``, naming each shard, its split and its token count::

    {"format": "flopwise-tokens", "version": 1, "dtype": "uint16", "vocabSize": 256,
     "shards": [{"file": "train-00000.bin", "split": "train", "tokens": 1048576}, ...,
                {"file": "val-00000.bin", "split": "val", "tokens": 52000}],
     "tokens": {"train": ..., "val": ...}, "source": "..."}

Shards are read with ``numpy.memmap`` so a run never loads a corpus into memory. The validation split is the
last ``val_fraction`` of the token stream, written to its own shards: nothing in it is ever sampled for
training. Window sampling is a pure function of ``(seed, step)`` so that a resumed run replays exactly.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

META_FILE = "meta.json"
FORMAT = "flopwise-tokens"
VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 24
VAL_SEED = 0x5EED_0FF  # validation windows do not depend on a run's seed: every run is scored on the same text


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The narrowest little-endian unsigned type holding every token id."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def write_shards(tokens: np.ndarray, out_dir: str | Path, *, vocab_size: int, val_fraction: float = 0.05,
                 shard_tokens: int = DEFAULT_SHARD_TOKENS, source: str = "") -> dict:
    """Write ``tokens`` (1-D) as train/val shards plus ``meta.json``; return the sidecar.

    The sidecar is written last (tmp file then rename), so a half-written folder never looks complete."""
    tokens = np.asarray(tokens).reshape(-1)
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size})")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError("val_fraction must lie strictly between 0 and 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = dtype_for_vocab(vocab_size)
    n_val = max(1, round(tokens.size * val_fraction))
    if tokens.size - n_val < 2:
        raise ValueError(f"too few tokens ({tokens.size}) for a train and a validation split")
    splits = {"train": tokens[: tokens.size - n_val], "val": tokens[tokens.size - n_val:]}
    shards = []
    for split, data in splits.items():
        for i, start in enumerate(range(0, data.size, shard_tokens)):
            chunk = data[start:start + shard_tokens].astype(dtype)
            name = f"{split}-{i:05d}.bin"
            chunk.tofile(out / name)
            shards.append({"file": name, "split": split, "tokens": int(chunk.size)})
    meta = {"format": FORMAT, "version": VERSION, "dtype": dtype.name, "vocabSize": int(vocab_size),
            "shards": shards, "tokens": {k: int(v.size) for k, v in splits.items()}, "source": source}
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, out / META_FILE)
    return meta


class TokenSplit:
    """One split (train or val) of a shard folder, memory-mapped; windows never cross a shard boundary."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.lengths = np.array([a.size for a in arrays], dtype=np.int64)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    def _usable(self, width: int) -> np.ndarray:
        usable = np.maximum(self.lengths - width + 1, 0)
        if usable.sum() <= 0:
            raise ValueError(f"no shard holds a window of {width} tokens (split has {self.tokens})")
        return usable

    def window(self, shard: int, offset: int, width: int) -> np.ndarray:
        return np.asarray(self.arrays[shard][offset:offset + width], dtype=np.int64)

    def sample(self, n: int, width: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` windows of ``width`` tokens, uniformly over all start positions of all shards."""
        usable = self._usable(width)
        starts = rng.integers(0, int(usable.sum()), size=n)
        return self._gather(starts, usable, width)

    def evenly_spaced(self, n: int, width: int) -> np.ndarray:
        """``n`` windows spread evenly over the split (no randomness: the same text for every run)."""
        return self.windows_at(self.evenly_spaced_starts(n, width), width)

    def usable_starts(self, width: int) -> int:
        """How many windows of ``width`` tokens fit inside one shard: the start index that ``windows_at`` takes
        runs over [0, this), shard after shard, and two starts in one shard are as far apart as their index."""
        return int(self._usable(width).sum())

    def evenly_spaced_starts(self, n: int, width: int) -> np.ndarray:
        """The start indices ``evenly_spaced`` reads (so that other windows can be chosen to avoid them)."""
        total = self.usable_starts(width)
        return np.linspace(0, total - 1, num=n).astype(np.int64) if n > 1 else np.zeros(1, dtype=np.int64)

    def windows_at(self, starts: np.ndarray, width: int) -> np.ndarray:
        """The windows of ``width`` tokens at these start indices (see ``usable_starts``)."""
        return self._gather(np.asarray(starts, dtype=np.int64), self._usable(width), width)

    def _gather(self, starts: np.ndarray, usable: np.ndarray, width: int) -> np.ndarray:
        bounds = np.cumsum(usable)
        shard_idx = np.searchsorted(bounds, starts, side="right")
        offsets = starts - (bounds[shard_idx] - usable[shard_idx])
        out = np.empty((starts.size, width), dtype=np.int64)
        for row, (s, o) in enumerate(zip(shard_idx, offsets, strict=True)):
            out[row] = self.window(int(s), int(o), width)
        return out


@dataclass
class TokenDataset:
    """A shard folder opened for reading."""

    path: Path
    meta: dict
    train: TokenSplit
    val: TokenSplit

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocabSize"])


def open_dataset(path: str | Path) -> TokenDataset:
    """Open a shard folder (or its ``meta.json``); raises ``FileNotFoundError``/``ValueError`` when unusable."""
    root = Path(path)
    if root.name == META_FILE:
        root = root.parent
    meta_path = root / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"no token dataset at {root} (missing {META_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path} is not a {FORMAT} sidecar")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    arrays: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    for shard in meta["shards"]:
        file = root / shard["file"]
        expected = int(shard["tokens"]) * dtype.itemsize
        if not file.is_file() or file.stat().st_size != expected:
            raise ValueError(f"shard {file} is missing or not {expected} bytes long")
        arrays[shard["split"]].append(np.memmap(file, dtype=dtype, mode="r", shape=(int(shard["tokens"]),)))
    for split, parts in arrays.items():
        if not parts:
            raise ValueError(f"dataset {root} has no {split} shards")
    return TokenDataset(root, meta, TokenSplit(arrays["train"]), TokenSplit(arrays["val"]))


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The generator for one optimiser step: a pure function of (seed, step), so resume replays exactly."""
    return np.random.default_rng([int(seed), int(step), int(stream)])


# --------------------------------------------------------------------------------------------------
# A corpus every machine has: the Python standard library's own source files, as bytes
# --------------------------------------------------------------------------------------------------

def stdlib_files(root: str | Path | None = None, include: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> list[Path]:
    """The standard library's ``.py`` files in sorted relative-path order (site-packages left out).

    ``include``/``exclude`` are glob patterns on the path relative to the library root (e.g. ``email/*``),
    which lets a benchmark pre-train on one part of the library and fine-tune on another."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    include, exclude = list(include), list(exclude)
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        for name in filenames:
            if not name.endswith(".py"):
                continue
            rel = (Path(dirpath) / name).relative_to(base).as_posix()
            if include and not any(fnmatch.fnmatch(rel, p) for p in include):
                continue
            if any(fnmatch.fnmatch(rel, p) for p in exclude):
                continue
            files.append(base / rel)
    return sorted(files, key=lambda p: p.relative_to(base).as_posix())


def iter_file_bytes(files: Iterable[Path], max_bytes: int | None = None) -> Iterator[bytes]:
    """File contents, each followed by a blank line, stopping once ``max_bytes`` have been produced."""
    produced = 0
    for file in files:
        data = file.read_bytes() + b"\n\n"
        if max_bytes is not None and produced + len(data) > max_bytes:
            data = data[: max_bytes - produced]
        if data:
            yield data
        produced += len(data)
        if max_bytes is not None and produced >= max_bytes:
            return


def prepare_stdlib(out_dir: str | Path, *, max_bytes: int | None = None, val_fraction: float = 0.05,
                   include: Iterable[str] = (), exclude: Iterable[str] = (), root: str | Path | None = None,
                   shard_tokens: int = DEFAULT_SHARD_TOKENS) -> dict:
    """Byte-level tokens (vocab 256) of the standard library's source, deterministic for a given library."""
    files = stdlib_files(root, include, exclude)
    if not files:
        raise ValueError("no standard-library files matched")
    blob = b"".join(iter_file_bytes(files, max_bytes))
    tokens = np.frombuffer(blob, dtype=np.uint8).astype(np.uint16)
    source = f"python-stdlib bytes: {len(files)} files" + (f", first {max_bytes} bytes" if max_bytes else "")
    return write_shards(tokens, out_dir, vocab_size=256, val_fraction=val_fraction,
                        shard_tokens=shard_tokens, source=source)
