"""`ochre train-tokenizer` and `ochre tokenize`: exact resume, surviving a kill, token shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from ochre.cli import main
from ochre.data.loader import WindowDataset, read_index
from ochre.models.tokenizer import Tokenizer, TokenizerConfig, TokenizerTrainConfig
from ochre.train.checkpoint import latest_checkpoint, load_checkpoint, load_tokenizer
from ochre.train.tokenizer import train

SMALL = dict(channels=(8, 16, 16), blocks=(0, 1, 1), code_dim=8, codebook_size=64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    assert main(["synth", str(root / "src"), "--episodes", "4", "--steps", "120", "--seed", "1"]) == 0
    assert main(["prepare", str(root / "src"), str(root / "clips"), "--per-shard", "1"]) == 0
    return root / "clips"


def _train(clips, out, steps, resume=False, **kw):
    cfg = TokenizerConfig(**SMALL)
    tcfg = TokenizerTrainConfig(steps=steps, batch=8, lr=2e-3, warmup=2)
    return train(clips, out, cfg, tcfg, seed=0, resume=resume, ckpt_every=3, log_every=1, progress=False,
                 eval_frames_n=16, **kw)


def _state(run):
    model = load_tokenizer(run)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_the_exact_run(clips, tmp_path, monkeypatch):
    _train(clips, tmp_path / "straight", steps=8)
    # The same run interrupted while fetching batch 7 (checkpoint at step 6), then resumed to 8.
    import ochre.train.tokenizer as loop

    real = loop.frame_batches

    def interrupted(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 6:
                raise KeyboardInterrupt
            yield batch
    monkeypatch.setattr(loop, "frame_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(clips, tmp_path / "cut", steps=8)
    monkeypatch.setattr(loop, "frame_batches", real)
    metrics = _train(clips, tmp_path / "cut", steps=8, resume=True)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert set(metrics) >= {"recon_psnr", "codebook_perplexity", "codebook_usage"}
    logs = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, 9))
    assert (tmp_path / "cut" / "recon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_killed_training_resumes_and_every_checkpoint_loads(clips, tmp_path):
    run = tmp_path / "run"
    def cmd(steps):
        return [sys.executable, "-m", "ochre", "train-tokenizer", str(clips), "--out", str(run), "--steps",
                str(steps), "--batch", "4", "--ckpt-every", "2", "--log-every", "1"]
    proc = subprocess.Popen(cmd(400), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and (latest_checkpoint(run) is None or
                                      int(latest_checkpoint(run).name.split("_")[1]) < 6):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)           # lands anywhere: mid-step, mid-save, mid-prune
    proc.wait()
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    assert ckpts, "no checkpoint before the kill"
    for ckpt in ckpts:                         # never a half-written checkpoint on disk
        model = Tokenizer(TokenizerConfig.preset("tiny"))
        opt = torch.optim.AdamW(model.parameters())
        load_checkpoint(ckpt, model, opt)
    step_before = int(latest_checkpoint(run).name.split("_")[1])
    r = subprocess.run(cmd(step_before + 2) + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stderr and latest_checkpoint(run).name == f"step_{step_before + 2:08d}"


def test_tokenize_writes_token_shards_that_decode_to_reconstructions(clips, tmp_path):
    _train(clips, tmp_path / "tok", steps=3)
    assert main(["tokenize", str(clips), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens"),
                 "--batch", "32"]) == 0
    index = read_index(tmp_path / "tokens")
    assert index["kind"] == "tokens" and len(index["tokenizer"]) == 16
    assert index["num_samples"] == read_index(clips)["num_samples"]
    model = load_tokenizer(tmp_path / "tok")
    tokens = next(iter(WindowDataset(tmp_path / "tokens", window=4, split="all", shuffle=False)))
    frames = next(iter(WindowDataset(clips, window=4, split="all", shuffle=False)))
    assert tokens["key"] == frames["key"] and torch.equal(tokens["actions"], frames["actions"])
    assert tokens["tokens"].shape == (4, 16, 16) and int(tokens["tokens"].max()) < 64
    with torch.no_grad():
        want = model.decode(model.encode(frames["frames"]), as_uint8=True)
        got = model.decode(tokens["tokens"], as_uint8=True)
    assert torch.equal(got, want)
    # a rerun with the same tokenizer has nothing to do, and leaves identical shards
    before = {p.name: p.read_bytes() for p in (tmp_path / "tokens" / "shards").glob("*.tar")}
    assert main(["tokenize", str(clips), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens")]) == 0
    assert before == {p.name: p.read_bytes() for p in (tmp_path / "tokens" / "shards").glob("*.tar")}


@pytest.mark.slow
def test_torchrun_ddp_on_cpu(clips, tmp_path):
    """Two gloo ranks: each reads its own shards, gradients and codebook stay in sync (checked
    by the loop itself at the end), rank 0 writes checkpoints and metrics."""
    run = tmp_path / "ddp"
    # --standalone: a free rendezvous port per run (a fixed one collides with a previous run's
    # lingering socket). A new session, so a hang kills every rank, not just the launcher.
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "ochre", "train-tokenizer", str(clips), "--out", str(run), "--steps", "4",
                             "--batch", "4", "--log-every", "2", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        pytest.fail(f"torchrun hung:\n{stderr[-3000:]}")
    assert proc.returncode == 0, stderr[-3000:]
    assert latest_checkpoint(run).name == "step_00000004"
    logs = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs] == [2, 4]
    assert json.loads((run / "metrics.json").read_text())["recon_psnr"] > 0


def test_compiled_training_runs_and_tracks_eager(clips, tmp_path):
    """--compile: the compiled loss step (custom ops inside, fullgraph) trains like eager."""
    eager = _train(clips, tmp_path / "eager", steps=4)
    compiled = _train(clips, tmp_path / "compiled", steps=4, compile=True)
    a = [json.loads(x)["loss"] for x in (tmp_path / "eager" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "compiled" / "log.jsonl").read_text().splitlines()]
    # Same data, same init; inductor reorders float reductions, so agreement is close, not exact.
    assert a == pytest.approx(b, rel=1e-3)
    assert compiled["recon_psnr"] == pytest.approx(eager["recon_psnr"], abs=0.05)
