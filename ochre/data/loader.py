"""Loaders: clip or token shards -> fixed-length windows, or single frames, via webdataset.

Splitting: the shard list is shuffled with the same seed on every rank (seed + epoch), then
dealt to ranks (`split_by_node`) and within a rank to DataLoader workers (`split_by_worker`).
Each shard therefore goes to exactly one (rank, worker) per epoch: no sample is duplicated or
lost. Keep shards >= ranks x workers (a warning says so), or some workers sit idle.

Windows never cross a trajectory boundary: they are cut inside one clip sample, which
`ochre prepare` never lets span two trajectories. Videos are decoded with decord, after the
shuffle buffer, and only the frames a window needs.

Splits (docs/metrics.md#splits): whole trajectories, never segments of one. Sources are ranked by
the crc32 of their name: the first 5 % (at least one) are "test", the next 5 % (at least one) "val",
the rest "train"; with fewer than 3 sources, one goes to test, the rest to train, and val is empty.
The split is stable across reruns and even a small demo dataset has a held-out trajectory.
Evaluation frames (`eval_frames`) give every trajectory of a split an equal share, evenly spaced
from its first kept frame to its last, so a metric speaks for all of them, not for one's start.
Legend: T window length, K frames in a clip, h w token grid.
"""

from __future__ import annotations

import json
import random
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ochre.data.shards import load_npy, read_index, tar_samples
from ochre.data.video import decode_frames

HELD_OUT_PERCENT = 5    # of the sources, for test and again for val
SPLITS = ("train", "val", "test")
FRAMES_PER_CLIP = 16    # frames a tokenizer epoch draws from each clip (frame_batches' per_clip)


@dataclass
class Split:
    """Which part of the data this iterator reads. rank/world default to torch.distributed."""
    rank: int | None = None
    world: int | None = None


def split_sources(index: dict) -> dict[str, frozenset[str]]:
    """{"train", "val", "test": the sources (trajectories) in each split} (module docstring)."""
    sources = sorted({s["source"] for shard in index["shards"] for s in shard["samples"]},
                     key=lambda name: (zlib.crc32(name.encode()), name))
    n = len(sources)
    held = max(1, round(n * HELD_OUT_PERCENT / 100)) if n >= 3 else 0
    n_test = held if n >= 3 else min(1, n - 1)
    n_val = held
    return {"test": frozenset(sources[:n_test]), "val": frozenset(sources[n_test:n_test + n_val]),
            "train": frozenset(sources[n_test + n_val:])}


def rank_shards(shards: list, seed: int, epoch: int, rank: int, world: int, shuffle: bool = True) -> list:
    """The shards one rank reads in an epoch: the list shuffled alike on every rank, then dealt."""
    shards = list(shards)
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(shards)
    return shards[rank::world]


def rank_frame_count(index: dict, *, rank: int, world: int, seed: int, epoch: int, split: str = "train",
                     per_clip: int | None = FRAMES_PER_CLIP) -> int:
    """Frames a rank's FrameDataset yields in an epoch, from index.json alone (nothing decoded)."""
    splits = split_sources(index)
    mine = rank_shards(index["shards"], seed, epoch, rank, world)
    return sum(min(s["frames"], per_clip or s["frames"]) for shard in mine for s in shard["samples"]
               if in_split(s["source"], split, splits))


def in_split(source: str, split: str, splits: dict[str, frozenset[str]]) -> bool:
    """Whether `source` is in `split` ("train", "val", "test" or "all") of split_sources' `splits`."""
    check_split(split)
    return split == "all" or source in splits[split]


def check_split(split: str) -> str:
    if split not in (*SPLITS, "all"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")
    return split


def _rank_world(split: Split) -> tuple[int, int]:
    if split.rank is not None:
        return split.rank, split.world or 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker_info() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


class ShardStream(torch.utils.data.IterableDataset):
    """Base: this (rank, worker)'s shards for the epoch, as raw webdataset samples."""

    def __init__(self, root, *, split: str = "train", shuffle: bool = True, seed: int = 0,
                 shuffle_buffer: int = 512, dist: Split | None = None):
        self.root = Path(root)
        self.index = read_index(root)
        self.urls = [str(self.root / s["file"]) for s in self.index["shards"]]
        if not self.urls:
            raise ValueError(f"{root}/index.json lists no shards (was every recording skipped?)")
        check_split(split)
        self.splits = split_sources(self.index)
        self.split, self.shuffle, self.seed = split, shuffle, seed
        self.shuffle_buffer, self.dist, self.epoch = shuffle_buffer, dist or Split(), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_shards(self) -> list[str]:
        rank, world = _rank_world(self.dist)
        worker, workers = _worker_info()
        if len(self.urls) < world * workers and rank == 0 and worker == 0:
            warnings.warn(f"{len(self.urls)} shards for {world} ranks x {workers} workers: some read nothing; "
                          "prepare with a smaller --per-shard", stacklevel=2)
        return rank_shards(self.urls, self.seed, self.epoch, rank, world, self.shuffle)[worker::workers]

    def _rng(self) -> random.Random:
        rank, _ = _rank_world(self.dist)
        worker, _ = _worker_info()
        return random.Random(hash((self.seed, self.epoch, rank, worker)))

    def samples(self) -> Iterator[dict]:
        for sample in tar_samples(self.my_shards()):
            meta = json.loads(sample["json"])
            if in_split(meta["source"], self.split, self.splits):
                sample["meta"] = meta
                yield sample

    def _shuffled(self, items: Iterator, rng: random.Random) -> Iterator:
        if not self.shuffle:
            yield from items
            return
        buf = []
        for item in items:
            buf.append(item)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf


class WindowDataset(ShardStream):
    """Fixed-length windows: {"frames" uint8 (T, 3, H, W) | "tokens" int64 (T, h, w),
    "actions" float32 (T-1, 4), "ticks" int64 (T,), "key"}.

    Each clip yields its non-overlapping windows from a random phase (every frame is seen
    about once per epoch); without shuffle the phase is 0 and the order is the shard order.
    Tensors of one clip's windows are views of one decoded array (collate copies them).
    """

    def __init__(self, root, window: int, **kwargs):
        kwargs.setdefault("shuffle_buffer", 256)      # windows, not frames: 256 x T frames in memory
        super().__init__(root, **kwargs)
        if window < 2:
            raise ValueError(f"window must be >= 2 frames, got {window}")
        self.window = window

    def windows(self, rng: random.Random) -> Iterator[dict]:
        # A clip is decoded once, sequentially, and cut into all its windows: sequential decode
        # is ~3x faster per frame than a seek per window, and every frame is used anyway.
        for sample in self.samples():
            k = sample["meta"]["frames"]
            if k < self.window:
                continue
            phase = rng.randrange(min(self.window, k - self.window + 1)) if self.shuffle else 0
            starts = range(phase, k - self.window + 1, self.window)
            clip = self.load_clip(sample, starts[0], starts[-1] + self.window)
            for start in starts:
                yield {"key": sample["__key__"], "start": start,
                       **{name: x[start - starts[0]: start - starts[0] + self.window - (name == "actions")]
                          for name, x in clip.items()}}

    def __iter__(self):
        rng = self._rng()
        yield from self._shuffled(self.windows(rng), rng)

    @staticmethod
    def load_clip(sample: dict, start: int, stop: int) -> dict[str, torch.Tensor]:
        """Frames start..stop-1 of a clip sample and their actions/ticks, as tensors."""
        out = {"actions": torch.from_numpy(load_npy(sample["actions.npy"])[start:stop - 1].copy()),
               "ticks": torch.from_numpy(load_npy(sample["ticks.npy"])[start:stop].copy())}
        if "tokens.npy" in sample:
            out["tokens"] = torch.from_numpy(load_npy(sample["tokens.npy"])[start:stop].astype(np.int64))
        else:
            frames = decode_frames(sample["mp4"], range(start, stop))          # (T, H, W, 3)
            out["frames"] = torch.from_numpy(frames).permute(0, 3, 1, 2)      # (T, 3, H, W)
        return out


class FrameDataset(ShardStream):
    """Single frames uint8 (3, H, W) for the tokenizer: up to `per_clip` random frames from each
    clip (all of them when per_clip is None), shuffled across clips."""

    def __init__(self, root, per_clip: int | None = 16, **kwargs):
        super().__init__(root, **kwargs)
        self.per_clip = per_clip

    def __iter__(self):
        rng = self._rng()
        yield from self._shuffled(self._frames(rng), rng)

    def _frames(self, rng: random.Random) -> Iterator[torch.Tensor]:
        # One decoder per clip for all its picks (opening a reader costs more than a few frames).
        for sample in self.samples():
            k = sample["meta"]["frames"]
            idx = sorted(rng.sample(range(k), min(k, self.per_clip))) if self.per_clip else range(k)
            yield from torch.from_numpy(decode_frames(sample["mp4"], idx)).permute(0, 3, 1, 2)  # (3, H, W)


def frame_batches(root, batch: int, *, seed: int = 0, split: str = "train", workers: int = 0,
                  dist: Split | None = None, start_epoch: int = 0, skip: int = 0,
                  per_clip: int | None = FRAMES_PER_CLIP) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Endless uint8 (B, 3, H, W) batches of random frames: yields (epoch, batch_in_epoch, frames).

    Deterministic for a given seed, rank and worker count, so a run resumes exactly by starting
    at (start_epoch, skip): the skipped batches are drawn and dropped (decoding included).
    """
    ds = FrameDataset(root, per_clip=per_clip, seed=seed, split=split, dist=dist)
    epoch = start_epoch
    while True:
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, drop_last=True,
                                             persistent_workers=False)
        n = -1
        for n, frames in enumerate(loader):
            if epoch == start_epoch and n < skip:
                continue
            yield epoch, n, frames
        if n < 0 and epoch == start_epoch:
            raise ValueError(f"{root}: no batch of {batch} frames in split {split!r} for this rank")
        epoch += 1


def window_loader(root, window: int, batch: int, *, workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader of window batches (one epoch; call .dataset.set_epoch(e) between epochs)."""
    ds = WindowDataset(root, window, **kwargs)
    return torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers,
                                       collate_fn=_collate, drop_last=False)


def _collate(items: list[dict]) -> dict:
    out = {k: torch.stack([it[k] for it in items]) for k in items[0] if isinstance(items[0][k], torch.Tensor)}
    out["key"] = [it["key"] for it in items]
    out["start"] = torch.tensor([it["start"] for it in items])
    return out


def spread_picks(index: dict, n: int, split: str = "test") -> dict[str, list[int]]:
    """Which frames `eval_frames` reads: {sample key: sorted frame indices in that clip}.

    Each trajectory of the split gets n // T frames (the first n % T one more), evenly spaced
    from its first kept frame to its last. A trajectory's clips share their boundary frames, so
    frame f of the trajectory is counted once, in the first clip that holds it.
    """
    splits = split_sources(index)
    return spread_over_sources(index, n, lambda source: in_split(source, split, splits))


def spread_over_sources(index: dict, n: int, keep) -> dict[str, list[int]]:
    """`spread_picks` over the sources for which keep(source) is true."""
    clips: dict[str, list[tuple[str, int]]] = {}            # source -> [(key, frames)] in order
    for shard in index["shards"]:
        for s in shard["samples"]:
            if keep(s["source"]):
                clips.setdefault(s["source"], []).append((s["key"], s["frames"]))
    picks: dict[str, list[int]] = {}
    for i, source in enumerate(sorted(clips)):
        share = n // len(clips) + (i < n % len(clips))
        total = sum(k for _, k in clips[source]) - (len(clips[source]) - 1)   # distinct frames
        wanted = np.unique(np.linspace(0, total - 1, min(share, total)).round().astype(np.int64))
        start = 0
        for key, k in clips[source]:
            local = wanted[(wanted >= start) & (wanted < start + k)] - start
            wanted = wanted[wanted >= start + k]
            if len(local):
                picks[key] = local.tolist()
            start += k - 1
    return picks


def eval_frames(root, n: int, *, split: str = "test") -> torch.Tensor:
    """Up to n frames uint8 (n, 3, H, W) of a split, spread over its trajectories (`spread_picks`),
    deterministic. Falls back to the whole dataset (with a warning) when the split is empty."""
    index = read_index(root)
    picks = spread_picks(index, n, split)
    if not picks:
        warnings.warn(f"{root}: split {split!r} is empty; evaluating on all data", stacklevel=2)
        picks = spread_picks(index, n, "all")
    urls = [str(Path(root) / shard["file"]) for shard in index["shards"]
            if any(s["key"] in picks for s in shard["samples"])]
    frames = [decode_frames(sample["mp4"], picks[sample["__key__"]])             # (k, H, W, 3)
              for sample in tar_samples(urls) if sample["__key__"] in picks]
    return torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2)          # (n, 3, H, W)


def window_batches(root, window: int, batch: int, *, seed: int = 0, split: str = "train", workers: int = 0,
                   dist: Split | None = None, start_epoch: int = 0, skip: int = 0) -> Iterator[tuple[int, int, dict]]:
    """Endless batches of fixed-length windows (see WindowDataset): yields (epoch, batch_in_epoch, batch).

    Full batches only (fixed shapes for compile and DDP). Deterministic for a given seed, rank and
    worker count, so a run resumes exactly from (start_epoch, skip), as frame_batches does.
    """
    ds = WindowDataset(root, window, seed=seed, split=split, dist=dist)
    # A private generator: a DataLoader otherwise draws its base seed from the global torch RNG at
    # every epoch start, which the training loop also samples from, and a resumed run would differ.
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=_collate,
                                         drop_last=True, generator=torch.Generator().manual_seed(seed))
    epoch = start_epoch
    while True:
        ds.set_epoch(epoch)
        n = -1
        for n, item in enumerate(loader):
            if epoch == start_epoch and n < skip:
                continue
            yield epoch, n, item
        if n < 0:
            raise ValueError(f"{root}: no batch of {batch} windows of {window} frames in split {split!r} "
                             "for this rank; use a smaller --batch or --window, or more data")
        epoch += 1
