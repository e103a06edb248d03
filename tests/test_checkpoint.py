"""Checkpoints: exact round trips (weights, EMA buffers, AdamW state), exact resume, pruning,
atomicity against a killed save, corruption detection, and no unpickling anywhere."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import ochre.models.checkpoint as reading
import ochre.train.checkpoint as ckpt
from ochre.models import Tokenizer, TokenizerConfig
from ochre.models.checkpoint import CheckpointError, checkpoint_hash, latest_checkpoint, load_tokenizer
from ochre.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint

SMALL = dict(channels=(8, 16, 16), blocks=(0, 1, 1), code_dim=8, codebook_size=64)


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (2, 3, 8, 8), generator=g, dtype=torch.uint8)
            .repeat_interleave(8, 2).repeat_interleave(8, 3) for _ in range(n)]


def fresh(seed: int = 0) -> tuple[Tokenizer, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = Tokenizer(TokenizerConfig(**SMALL))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95), weight_decay=0.01)


def train(model, opt, data) -> None:
    for frames in data:
        loss, logs = model.compute_loss(frames)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_codebook(logs)


def assert_same_state(a: Tokenizer, b: Tokenizer, oa, ob) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and {"codebook", "ema_count", "ema_sum", "updates"} <= set(sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    da, db = oa.state_dict(), ob.state_dict()
    assert da["param_groups"] == db["param_groups"]
    assert da["state"].keys() == db["state"].keys() and len(da["state"]) > 0
    for i in da["state"]:
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(da["state"][i][k], db["state"][i][k]), (i, k)


@pytest.mark.exact
def test_round_trip_is_bit_exact(tmp_path):
    model, opt = fresh()
    train(model, opt, batches(3))
    path = save_checkpoint(tmp_path, 3, model, opt, extra={"data": {"epoch": 1, "index": 17}})
    assert path == tmp_path / "checkpoints" / "step_00000003"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "optim.safetensors"]

    model2, opt2 = fresh(seed=1)
    meta = load_checkpoint(tmp_path, model2, opt2)
    assert meta["step"] == 3 and meta["kind"] == "tokenizer" and meta["extra"]["data"]["index"] == 17
    assert TokenizerConfig(**meta["config"]) == model.config
    assert_same_state(model, model2, opt, opt2)
    assert isinstance(opt2.param_groups[0]["betas"], tuple)


@pytest.mark.exact
def test_resume_continues_the_exact_run(tmp_path):
    data = batches(5)
    straight, opt = fresh()
    train(straight, opt, data)

    first, opt1 = fresh()
    train(first, opt1, data[:3])
    save_checkpoint(tmp_path, 3, first, opt1)
    resumed, opt2 = fresh(seed=123)  # different init: everything must come from the checkpoint
    load_checkpoint(latest_checkpoint(tmp_path), resumed, opt2)
    train(resumed, opt2, data[3:])
    assert_same_state(straight, resumed, opt, opt2)


def test_keep_last_n_and_stale_tmp(tmp_path):
    model, opt = fresh()
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, model, opt, keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_00000030", "step_00000040"]

    # A save killed half-way leaves a .tmp folder with partial files: readers ignore it ...
    stale = root / ".step_00000050.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x00" * 10)
    (root / "step_00000060").mkdir()  # ... and a folder without config.json is not a checkpoint
    assert latest_checkpoint(tmp_path) == root / "step_00000040"
    # ... and the next save cleans it up.
    save_checkpoint(tmp_path, 50, model, opt, keep=2)
    assert not stale.exists()
    assert latest_checkpoint(tmp_path) == root / "step_00000050"
    assert latest_checkpoint(tmp_path / "nowhere") is None


def test_saving_the_same_step_again_replaces_it(tmp_path):
    model, opt = fresh()
    save_checkpoint(tmp_path, 5, model, opt)
    train(model, opt, batches(1))
    path = save_checkpoint(tmp_path, 5, model, opt)
    other, _ = fresh(seed=9)
    load_checkpoint(path, other)
    assert torch.equal(other.encoder[0].weight, model.encoder[0].weight)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005"]


@pytest.mark.parametrize("name", ["model.safetensors", "optim.safetensors"])
def test_corrupted_checkpoint_is_refused_with_a_clear_error(tmp_path, name):
    model, opt = fresh()
    save_checkpoint(tmp_path, 1, model, opt)
    newest = save_checkpoint(tmp_path, 2, model, opt)
    f = newest / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match=name):
        load_checkpoint(tmp_path, *fresh())
    # The previous checkpoint is intact and loads.
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000001", *fresh())["step"] == 1


def test_load_tokenizer_and_hash(tmp_path):
    model, opt = fresh()
    train(model, opt, batches(2))
    path = save_checkpoint(tmp_path, 2, model, opt)
    loaded = load_tokenizer(tmp_path, device="cpu")
    assert not loaded.training
    frames = batches(1, seed=5)[0]
    assert torch.equal(loaded.encode(frames), model.eval().encode(frames))
    h = checkpoint_hash(path)
    # The first 16 hex digits of the weights file's sha256, whether named by checkpoint or by run.
    assert h == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16] == checkpoint_hash(tmp_path)
    train(model.train(), opt, batches(1))
    assert checkpoint_hash(save_checkpoint(tmp_path, 3, model)) != h  # weights changed
    with pytest.raises(CheckpointError, match="run folder"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="without optimizer"):
        load_checkpoint(tmp_path, *fresh())


def test_rng_state_round_trip_through_json():
    random.seed(1)
    torch.manual_seed(3)
    rng, tgen = np.random.default_rng(2), torch.Generator().manual_seed(4)
    rng.random(3)  # advance past the seed so the restored state is not the initial one
    state = json.loads(json.dumps(capture_rng_state(data=rng, noise=tgen)))

    def draw():
        return random.random(), rng.random(), torch.rand(3), torch.rand(3, generator=tgen)

    a = draw()
    restore_rng_state(state, data=rng, noise=tgen)
    b = draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])
    with pytest.raises(CheckpointError, match="other"):
        restore_rng_state(state, other=rng)


def test_never_unpickles():
    for module in (ckpt, reading):
        source = Path(module.__file__).read_text()
        assert "torch.load(" not in source and "import pickle" not in source and "pickle.load" not in source
