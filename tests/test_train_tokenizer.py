"""`ochre train-tokenizer` and `ochre tokenize`: exact resume, surviving a kill, token shards."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from ochre.cli import main
from ochre.data.loader import WindowDataset, read_index
from ochre.models.checkpoint import latest_checkpoint, load_tokenizer
from ochre.models.tokenizer import Tokenizer, TokenizerConfig, TokenizerTrainConfig
from ochre.train.checkpoint import load_checkpoint
from ochre.train.tokenizer import RunMismatch, train

SMALL = dict(channels=(8, 16, 16), blocks=(0, 1, 1), code_dim=8, codebook_size=64)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    assert main(["synth", str(root / "src"), "--episodes", "4", "--steps", "120", "--seed", "1"]) == 0
    assert main(["prepare", str(root / "src"), str(root / "clips"), "--per-shard", "1"]) == 0
    return root / "clips"


def _train(clips, out, steps, resume=False, precision="fp32", **kw):
    # fp32 unless a test asks: the tolerances below are fp32's (auto would pick bf16 on an AMX CPU).
    cfg = TokenizerConfig(**SMALL)
    tcfg = TokenizerTrainConfig(steps=steps, batch=8, lr=2e-3, warmup=2)
    return train(clips, out, cfg, tcfg, seed=0, resume=resume, ckpt_every=3, log_every=1, progress=False,
                 eval_frames_n=16, precision=precision, **kw)


def _state(run):
    model = load_tokenizer(run)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.exact
def test_resume_continues_the_exact_run(clips, tmp_path, monkeypatch):
    _train(clips, tmp_path / "straight", steps=8, device="cpu")
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
        _train(clips, tmp_path / "cut", steps=8, device="cpu")
    monkeypatch.setattr(loop, "frame_batches", real)
    metrics = _train(clips, tmp_path / "cut", steps=8, resume=True, device="cpu")
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


@pytest.mark.exact
def test_tokenize_writes_token_shards_that_decode_to_reconstructions(clips, tmp_path):
    # Tokenized on the CPU, where the comparison below encodes: tokens are nearest codes, and a
    # GPU's convolutions (TF32 by default in cuDNN) move near-equidistant ones to another code.
    _train(clips, tmp_path / "tok", steps=3, device="cpu")
    assert main(["tokenize", str(clips), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens"),
                 "--batch", "32", "--device", "cpu"]) == 0
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
    assert main(["tokenize", str(clips), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens"),
                 "--device", "cpu"]) == 0
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


def test_bf16_training_says_so_and_tracks_fp32(clips, tmp_path):
    """--precision bf16: autocast in the step (convolutions in bf16), the weights and the loss fp32."""
    _train(clips, tmp_path / "fp32", steps=2)
    _train(clips, tmp_path / "bf16", steps=2, precision="bf16")
    a, b = ([json.loads(x) for x in (tmp_path / name / "log.jsonl").read_text().splitlines()]
            for name in ("fp32", "bf16"))
    assert {x["precision"] for x in a} == {"fp32"} and {x["precision"] for x in b} == {"bf16"}
    # Step 1: the same weights and batch, so only the rounding differs. bf16 keeps 8 significant bits
    # (relative step 2^-8 = 0.4 %) in each of the few convolutions between the frames and the loss.
    assert b[0]["loss"] == pytest.approx(a[0]["loss"], rel=0.02)
    assert all(p.dtype == torch.float32 for p in load_tokenizer(tmp_path / "bf16").parameters())


def test_tokenize_rerun_with_other_clips_or_tokenizer_is_refused(clips, tmp_path):
    _train(clips, tmp_path / "tok", steps=2)
    _train(clips, tmp_path / "tok2", steps=3)
    tokens = tmp_path / "tokens"

    def tokenize(tok, src=clips, *flags):
        return main(["tokenize", str(src), "--tokenizer", str(tmp_path / tok), "--out", str(tokens), *flags])
    assert tokenize("tok") == 0
    before = {p.name: p.read_bytes() for p in (tokens / "shards").iterdir()}
    assert tokenize("tok2") == 2                                   # another tokenizer: refused
    other = tmp_path / "clips2"                                    # other clips (fewer recordings)
    shutil.copytree(clips.parent / "src", tmp_path / "src2")
    shutil.rmtree(next((tmp_path / "src2").iterdir()))
    assert main(["prepare", str(tmp_path / "src2"), str(other), "--per-shard", "1"]) == 0
    assert tokenize("tok", other) == 2
    assert {p.name: p.read_bytes() for p in (tokens / "shards").iterdir()} == before
    assert tokenize("tok", other, "--overwrite") == 0
    index = read_index(tokens)
    assert index["num_samples"] == read_index(other)["num_samples"] and len(index["shards"]) == 3
    assert len(list((tokens / "shards").glob("*.tar"))) == 3       # no stale fourth shard


def test_training_into_a_used_run_folder_needs_resume_or_overwrite(clips, tmp_path):
    run = tmp_path / "run"
    _train(clips, run, steps=3)
    with pytest.raises(RunMismatch, match="--resume to continue it, --overwrite"):
        _train(clips, run, steps=3)
    _train(clips, run, steps=2, overwrite=True)                    # afresh: the old step 3 is gone
    assert latest_checkpoint(run).name == "step_00000002"
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2]


@pytest.fixture(scope="module")
def tiny_run(clips, tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train-tokenizer", str(clips), "--out", str(run), "--steps", "1", "--batch", "4"]) == 0
    return run


@pytest.mark.parametrize("change, flags, says, differences", [
    ("batch", ["--batch", "2"], "batch 4 -> 2", 1),
    ("workers", ["--workers", "1"], "workers 0 -> 1", 1),
    ("seed", ["--seed", "1"], "seed 0 -> 1", 1),
    ("preset", ["--preset", "base"], "model: 3 changed (blocks, channels, code_dim); warmup 100 -> 500", 3),
    ("data", [], "clips ", 1),
])
def test_resume_with_other_settings_is_refused_in_one_line(clips, tiny_run, tmp_path, change, flags, says,
                                                            differences, capsys):
    data = clips
    if change == "data":
        data = tmp_path / "clips2"
        assert main(["prepare", str(clips.parent / "src"), str(data), "--per-shard", "2"]) == 0
    capsys.readouterr()
    argv = ["train-tokenizer", str(data), "--out", str(tiny_run), "--steps", "2", "--batch", "4", "--resume"]
    assert main(argv + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ochre train-tokenizer: cannot --resume"), err
    assert says in err[0] and err[0].count(";") == differences, err[0]   # names what differs, only that
    assert latest_checkpoint(tiny_run).name == "step_00000001"     # nothing was trained


def test_a_rank_without_data_stops_every_rank_with_the_same_message(clips, tmp_path):
    """One shard, two ranks (plain processes over gloo, as a multi-node launch would start them):
    rank 1 has nothing to read. Both must exit at once with one message, not leave rank 0 waiting."""
    one = tmp_path / "one_shard"
    assert main(["prepare", str(clips.parent / "src"), str(one)]) == 0       # 4 recordings per shard
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env.update(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cmd = [sys.executable, "-m", "ochre", "train-tokenizer", str(one), "--out", str(tmp_path / "run"),
           "--steps", "2", "--batch", "4", "--device", "cpu"]
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for r in range(2)]
    errs = []
    try:
        for p in procs:
            errs.append(p.communicate(timeout=120)[1])
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [2, 2], errs
    lines = [e.strip().splitlines()[-1] for e in errs]
    assert lines[0] == lines[1] and "rank(s) [1] would get fewer than 4 training frames" in lines[0], lines


def test_a_refined_decoder_keeps_the_codes_and_stands_in_for_its_tokenizer(clips, tmp_path, capsys):
    """--decoder-of trains the decoder alone: the encoder and codebook stay bit for bit, so every frame
    gets the same codes, the token shards stay valid and `ochre eval --tokenizer` may decode with it;
    a tokenizer with other codes is refused there, and a resume against another source tokenizer too."""
    from ochre.data.loader import eval_frames
    from ochre.eval.evaluate import decoding_tokenizer
    from ochre.models.checkpoint import CheckpointError, checkpoint_hash, read_checkpoint_config

    _train(clips, tmp_path / "tok", steps=4, device="cpu")
    _train(clips, tmp_path / "other", steps=5, device="cpu")
    argv = ["train-tokenizer", str(clips), "--out", str(tmp_path / "dec"), "--decoder-of", str(tmp_path / "tok"),
            "--steps", "6", "--batch", "4", "--lr", "1e-2", "--device", "cpu", "--precision", "fp32",
            "--decoder-blocks", "0", "1", "2"]             # one 16x16 block more than SMALL's
    assert main(argv) == 0
    assert "refining the decoder of" in capsys.readouterr().err
    base, refined = load_tokenizer(tmp_path / "tok"), load_tokenizer(tmp_path / "dec")
    assert refined.config.decoder_blocks == (0, 1, 2) and len(refined.decoder) == len(base.decoder) + 1
    before, after = base.state_dict(), refined.state_dict()
    for k in before:
        if not k.startswith("decoder."):
            assert torch.equal(before[k], after[k]), k
    frames = eval_frames(clips, 16, split="all")
    assert torch.equal(base.encode(frames), refined.encode(frames))
    assert not torch.equal(base.decode(base.encode(frames)), refined.decode(refined.encode(frames)))
    assert refined.codes_digest() == base.codes_digest() != load_tokenizer(tmp_path / "other").codes_digest()
    extra = read_checkpoint_config(tmp_path / "dec")["extra"]
    assert extra["decoder_of"] == {"checkpoint": checkpoint_hash(tmp_path / "tok"), "codes": base.codes_digest()}

    # the refined decoder stands in for its tokenizer in an eval; another tokenizer does not
    assert main(["tokenize", str(clips), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "tokens"),
                 "--device", "cpu"]) == 0
    index = read_index(tmp_path / "tokens")
    got = decoding_tokenizer(tmp_path / "tokens", index, tmp_path / "dec", "cpu")
    assert torch.equal(got.decoder[0].weight, refined.decoder[0].weight)
    with pytest.raises(CheckpointError, match="encoder or codebook differ"):
        decoding_tokenizer(tmp_path / "tokens", index, tmp_path / "other", "cpu")

    # resuming the refinement from another tokenizer is refused before any work
    capsys.readouterr()
    argv[argv.index(str(tmp_path / "tok"))] = str(tmp_path / "other")
    assert main(argv[:6] + ["--steps", "8"] + argv[8:] + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot --resume" in err and "decoder_of" in err, err
    assert latest_checkpoint(tmp_path / "dec").name == "step_00000006"
    assert main(["train-tokenizer", str(clips), "--out", str(tmp_path / "x"), "--decoder-blocks", "0", "1", "2"]) == 2
    assert "pass --decoder-of" in capsys.readouterr().err and not (tmp_path / "x").exists()

    # and it can replace a shipped tokenizer, whose world model reads the same codes; another cannot
    from runtime.ship import ship_decoder
    shipped = tmp_path / "shipped"
    shutil.copytree(latest_checkpoint(tmp_path / "tok"), shipped / "tokenizer")
    (shipped / "MODEL.json").write_text(json.dumps({"made_by": "ochre demo"}))
    with pytest.raises(ValueError, match="makes other codes"):
        ship_decoder(tmp_path / "other", "cmd", shipped)
    info = ship_decoder(tmp_path / "dec", "ochre train-tokenizer … --decoder-of …", shipped)
    assert info["made_by"] == "ochre demo" and info["tokenizer_made_by"].startswith("ochre train-tokenizer")
    assert json.loads((shipped / "MODEL.json").read_text()) == info
    assert read_checkpoint_config(shipped / "tokenizer")["extra"]["decoder_of"] == extra["decoder_of"]
    assert torch.equal(load_tokenizer(shipped / "tokenizer").decoder[-1].weight, refined.decoder[-1].weight)
    assert (shipped / "tokenizer_metrics.json").is_file() and not list(shipped.glob("*.tmp"))


@pytest.mark.exact
def test_an_adversarial_refinement_keeps_the_codes_and_resumes_exactly(clips, tmp_path, monkeypatch):
    """--adversarial: the discriminator trains alone for --disc-warmup steps (the decoder's loss is the
    reconstruction's until then), then both; the codes stay TOK's; the discriminator and its optimizer
    ride in every checkpoint, so a run cut after its checkpoint and resumed ends bit for bit where the
    uncut run ends; without --decoder-of the flag is refused before any work."""
    import ochre.train.tokenizer as loop
    from ochre.data.loader import eval_frames

    _train(clips, tmp_path / "tok", steps=4, device="cpu")
    cfg = TokenizerConfig(**SMALL)
    tcfg = TokenizerTrainConfig(steps=7, batch=8, lr=2e-3, warmup=2, adversarial=0.5, disc_warmup=3)

    def refine(out, resume=False):
        return train(clips, out, cfg, tcfg, seed=0, resume=resume, ckpt_every=4, log_every=1, progress=False,
                     eval_frames_n=16, precision="fp32", device="cpu", decoder_of=tmp_path / "tok")

    refine(tmp_path / "straight")
    logs = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert ["adv/weight" in r for r in logs] == [False] * 3 + [True] * 4          # the warm-up: D alone
    assert all(r["adv/weight"] > 0 for r in logs[3:]) and all(0 <= r["grad_ratio"] for r in logs)
    assert all(set(r) >= {"adv/d_loss", "adv/real_acc", "adv/fake_acc"} for r in logs)
    ckpt_dir = latest_checkpoint(tmp_path / "straight")
    assert (ckpt_dir / "companions.safetensors").is_file()

    real = loop.frame_batches

    def interrupted(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 5:                                   # after the checkpoint at step 4
                raise KeyboardInterrupt
            yield batch
    monkeypatch.setattr(loop, "frame_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        refine(tmp_path / "cut")
    monkeypatch.setattr(loop, "frame_batches", real)
    refine(tmp_path / "cut", resume=True)
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    d_a = load_checkpoint_companion(tmp_path / "straight")
    d_b = load_checkpoint_companion(tmp_path / "cut")
    for k in d_a:
        assert torch.equal(d_a[k], d_b[k]), k

    base, refined = load_tokenizer(tmp_path / "tok"), load_tokenizer(tmp_path / "straight")
    frames = eval_frames(clips, 16, split="all")
    assert torch.equal(base.encode(frames), refined.encode(frames))
    assert refined.codes_digest() == base.codes_digest()
    assert not torch.equal(base.decoder[-1].weight, refined.decoder[-1].weight)

    with pytest.raises(ValueError, match="pass --decoder-of"):
        train(clips, tmp_path / "x", cfg, tcfg, seed=0, progress=False, device="cpu")
    assert not (tmp_path / "x").exists()
    assert main(["train-tokenizer", str(clips), "--out", str(tmp_path / "y"), "--adversarial", "0.1"]) == 2
    assert not (tmp_path / "y").exists()


def load_checkpoint_companion(run):
    from safetensors.torch import load_file
    return load_file(latest_checkpoint(run) / "companions.safetensors")
