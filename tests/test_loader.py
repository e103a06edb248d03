"""Loaders: window shapes and alignment, DDP x worker splitting, resumable frame batches."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from recordings import read_index_frames

from ochre.actions import kept_ticks
from ochre.data.loader import (
    Split,
    WindowDataset,
    eval_frames,
    frame_batches,
    read_index,
    split_sources,
    spread_picks,
)
from ochre.data.prepare import PrepareConfig, prepare, write_tar


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from recordings import index_frames, random_controls

    from ochre.data.synth import write_minerl

    root = tmp_path_factory.mktemp("loader")
    for i in range(10):
        n = 60 + 10 * i
        camera, keys = random_controls(n, i)
        write_minerl(root / "src" / f"traj{i:02d}", index_frames(n + 3), camera, keys, loading=2)
    prepare(root / "src", root / "out", PrepareConfig(fps=8, segment=12, per_shard=1), workers=2,
            progress=False)
    return root / "out"


def test_windows_have_fixed_shapes_and_stay_in_one_trajectory(prepared):
    ds = WindowDataset(prepared, window=6, split="all", seed=3)
    n = 0
    for w in ds:
        assert w["frames"].shape == (6, 3, 64, 64) and w["frames"].dtype == torch.uint8
        assert w["actions"].shape == (5, 4) and w["actions"].dtype == torch.float32
        frames = w["frames"].permute(0, 2, 3, 1).numpy()
        # every frame is the source state its tick says: consecutive, inside one trajectory
        np.testing.assert_array_equal(read_index_frames(frames), 2 + w["ticks"].numpy())
        assert torch.all(w["ticks"].diff() > 0)
        n += 1
    assert n > 20


class _SampleKeys(WindowDataset):
    """The same split logic, yielding each raw sample's key once per (rank, worker) that reads it."""

    def __iter__(self):
        return (s["__key__"] for s in self.samples())


def _keys(prepared, world: int, workers: int, epoch: int) -> Counter:
    seen = Counter()
    for rank in range(world):
        ds = _SampleKeys(prepared, window=2, split="all", seed=5, dist=Split(rank, world))
        ds.set_epoch(epoch)
        seen.update(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers))
    return seen


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 2), (3, 1)])
def test_ranks_and_workers_cover_every_sample_exactly_once(prepared, world, workers):
    expected = {s["key"] for shard in read_index(prepared)["shards"] for s in shard["samples"]}
    for epoch in (0, 1):
        seen = _keys(prepared, world, workers, epoch)
        assert set(seen) == expected
        assert max(seen.values()) == 1, [k for k, c in seen.items() if c > 1]


def test_frame_batches_resume_exactly(prepared):
    stream = frame_batches(prepared, 8, seed=1, split="all")
    first = [next(stream) for _ in range(12)]
    epoch, n, _ = first[6]
    resumed = frame_batches(prepared, 8, seed=1, split="all", start_epoch=epoch, skip=n + 1)
    for want in first[7:]:
        got = next(resumed)
        assert got[:2] == want[:2]
        assert torch.equal(got[2], want[2])


def test_split_is_by_trajectory_and_eval_frames_are_held_out(prepared):
    index = read_index(prepared)
    splits = split_sources(index)
    val = splits["val"]
    assert len(val) == 1 and len(splits["test"]) == 1      # 10 trajectories: 5 % rounds up to one each
    assert not val & splits["test"] and splits["train"] | val | splits["test"] == {
        s["source"] for sh in index["shards"] for s in sh["samples"]}
    val_keys = {w["key"] for w in WindowDataset(prepared, window=2, split="val", shuffle=False)}
    train_keys = {w["key"] for w in WindowDataset(prepared, window=2, split="train", shuffle=False)}
    assert val_keys and train_keys and not val_keys & train_keys
    assert {k.split("/")[0] for k in val_keys} == set(val)
    frames = eval_frames(prepared, 16, split="val")
    assert frames.shape == (16, 3, 64, 64) and frames.dtype == torch.uint8
    with pytest.raises(ValueError, match="split must be one of"):
        WindowDataset(prepared, window=2, split="held-out")


def test_token_shards_yield_token_windows(tmp_path, prepared):
    # A token shard in the §3.4 layout (as `ochre tokenize` writes it) reads through the same loader.
    index = read_index(prepared)
    shard = index["shards"][0]
    with tarfile.open(prepared / shard["file"]) as tar:
        names = tar.getnames()
        key = names[0].rsplit(".", 1)[0].split(".")[0]
        actions = tar.extractfile(f"{key}.actions.npy").read()
        ticks = tar.extractfile(f"{key}.ticks.npy").read()
        meta = json.loads(tar.extractfile(f"{key}.json").read())
    k = meta["frames"]
    tokens = np.arange(k * 256, dtype=np.uint16).reshape(k, 16, 16)
    buf = io.BytesIO()
    np.save(buf, tokens)
    write_tar(tmp_path / "shards" / "clips-000000.tar",
              [{"__key__": key, "tokens.npy": buf.getvalue(), "actions.npy": actions, "ticks.npy": ticks,
                "json": json.dumps(meta).encode()}])
    (tmp_path / "index.json").write_text(json.dumps({"kind": "tokens", "shards": [
        {"file": "shards/clips-000000.tar", "samples": shard["samples"][:1]}]}))
    windows = list(WindowDataset(tmp_path, window=4, split="all", shuffle=False))
    assert len(windows) == k // 4
    w = windows[1]
    assert w["tokens"].shape == (4, 16, 16) and w["tokens"].dtype == torch.int64
    assert torch.equal(w["tokens"], torch.from_numpy(tokens[4:8].astype(np.int64)))
    assert w["actions"].shape == (3, 4)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="ochre prepare"):
        WindowDataset(tmp_path, window=4)


def test_eval_frames_are_spread_over_every_held_out_trajectory(prepared):
    # One test trajectory here (10 sources): its frames must span it from the first kept
    # frame to the last, evenly, not be the first n of its first clips.
    index = read_index(prepared)
    (val,) = split_sources(index)["test"]
    kept = sum(s["frames"] for sh in index["shards"] for s in sh["samples"] if s["source"] == val)
    segments = sum(1 for sh in index["shards"] for s in sh["samples"] if s["source"] == val)
    distinct = kept - (segments - 1)
    frames = eval_frames(prepared, 9)
    order = read_index_frames(frames.permute(0, 2, 3, 1).numpy()) - 2        # the source tick of each
    want = kept_ticks(1000, 8)[np.linspace(0, distinct - 1, 9).round().astype(int)]
    np.testing.assert_array_equal(order, want)
    # Several held-out trajectories: an equal share each, first to last frame of each.
    fake = {"shards": [{"file": f"s{i}", "samples": [
        {"key": f"t{i:02d}/{j}", "source": f"t{i:02d}", "frames": 5} for j in range(3)]} for i in range(40)]}
    picks = spread_picks(fake, 10)
    val = split_sources(fake)["test"]
    assert len(val) == 2 and {k.split("/")[0] for k in picks} == set(val)
    for source in val:
        mine = {k: v for k, v in picks.items() if k.startswith(source)}
        assert sum(map(len, mine.values())) == 5                            # 10 frames, 2 trajectories
        assert mine[f"{source}/0"][0] == 0 and mine[f"{source}/2"][-1] == 4  # 13 distinct: 0 .. 12
