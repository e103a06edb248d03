"""`ochre train` and `ochre eval`: exact resume, surviving kill -9, compile with the custom op,
NaN guarding, and the §6 metric files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from exactness import DETERMINISTIC_OCHRE

from ochre.cli import main
from ochre.models.checkpoint import latest_checkpoint, load_dynamics
from ochre.models.dynamics import DynamicsConfig
from ochre.models.sampling import SamplingConfig
from ochre.train.world import WorldLoss, WorldTrainConfig, train

SMALL_TOKENIZER = dict(channels=(8, 16, 16), blocks=(0, 1, 1), code_dim=8, codebook_size=64)
SMALL = dict(codebook_size=64, embed_dim=8, hidden=(8, 8), head_dim=8, action_embed=8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ochre.models.tokenizer import TokenizerConfig, TokenizerTrainConfig
    from ochre.train.tokenizer import train as train_tokenizer

    root = tmp_path_factory.mktemp("world")
    assert main(["synth", str(root / "src"), "--episodes", "6", "--steps", "120", "--seed", "2"]) == 0
    assert main(["prepare", str(root / "src"), str(root / "clips"), "--per-shard", "1"]) == 0
    train_tokenizer(root / "clips", root / "tok", TokenizerConfig(**SMALL_TOKENIZER),
                    TokenizerTrainConfig(steps=3, batch=8, warmup=1), progress=False, eval_frames_n=8)
    assert main(["tokenize", str(root / "clips"), "--tokenizer", str(root / "tok"), "--out", str(root / "tokens")]) == 0
    return root


def _train(tokens, out, steps, resume=False, impl="torch", shift=None, device=None, precision="fp32", **kw):
    # fp32 unless a test asks: auto would pick bf16 on an AMX CPU.
    cfg = DynamicsConfig(**SMALL, impl=impl)
    tcfg = WorldTrainConfig(steps=steps, batch=2, window=6, unroll=2, warmup=2, **kw)
    return train(tokens, out, cfg, tcfg, SamplingConfig(), seed=0, resume=resume, ckpt_every=3, log_every=1,
                 progress=False, shift=shift, device=device, precision=precision)


def _weights(run):
    return {k: v.clone() for k, v in load_dynamics(run)[0].state_dict().items()}


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.exact
def test_resume_continues_the_exact_run(data, tmp_path, monkeypatch):
    _train(data / "tokens", tmp_path / "straight", steps=8, device="cpu")
    import ochre.train.world as loop

    real = loop.window_batches

    def interrupted(*args, **kwargs):           # dies fetching batch 7; the checkpoint is at step 6
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 6:
                raise KeyboardInterrupt
            yield batch
    monkeypatch.setattr(loop, "window_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(data / "tokens", tmp_path / "cut", steps=8, device="cpu")
    monkeypatch.setattr(loop, "window_batches", real)
    _train(data / "tokens", tmp_path / "cut", steps=8, resume=True, device="cpu")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Steps 7-8 logged twice in "cut" (before the interruption nothing past 6 was logged).
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "straight")


def test_resume_refuses_a_different_run(data, tmp_path):
    _train(data / "tokens", tmp_path / "run", steps=3)
    cfg = DynamicsConfig(**SMALL, impl="torch")
    with pytest.raises(ValueError, match="cannot --resume .*batch"):
        train(data / "tokens", tmp_path / "run", cfg, WorldTrainConfig(steps=6, batch=4, window=6, unroll=2),
              SamplingConfig(), resume=True, progress=False)


@pytest.mark.exact
def test_kill_9_then_resume_matches_the_straight_run(data, tmp_path):
    """2N steps straight vs N steps, kill -9 somewhere after, resume to 2N: same weights and losses."""
    def cmd(run, steps):
        return [*DETERMINISTIC_OCHRE, "train", str(data / "tokens"), "--out", str(run), "--steps", str(steps),
                "--batch", "2", "--window", "5", "--unroll", "1", "--ckpt-every", "2", "--log-every", "1",
                "--impl", "torch", "--device", "cpu"]
    straight = tmp_path / "straight"
    assert subprocess.run(cmd(straight, 8), capture_output=True).returncode == 0
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd(run, 8), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (latest_checkpoint(run) is None or
                                      int(latest_checkpoint(run).name.split("_")[1]) < 4):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = int(latest_checkpoint(run).name.split("_")[1])
    assert step < 8, "finished before the kill; nothing was resumed"
    r = subprocess.run(cmd(run, 8) + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0 and "resuming from" in r.stderr, r.stderr[-2000:]
    a, b = _weights(straight), _weights(run)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Logged losses after the resume equal the straight run's at the same steps.
    logs = {json.loads(x)["step"]: json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()}
    want = {json.loads(x)["step"]: json.loads(x)["loss"] for x in (straight / "log.jsonl").read_text().splitlines()}
    assert logs == want


def test_compiled_train_step_keeps_the_custom_op_and_tracks_eager():
    """torch.compile(fullgraph=True) of the rollout loss with the fused-step op inside, on CPU; the
    unroll length U is data to it, so U = 1 then 2 reuses the first graph (the whole curriculum
    compiles once)."""
    from torch._dynamo.utils import counters

    from ochre.models.dynamics import Dynamics

    torch.manual_seed(0)
    torch._dynamo.reset()
    counters.clear()
    model = Dynamics(DynamicsConfig(**SMALL, impl="auto"))
    loss_fn = WorldLoss(model, WorldTrainConfig(window=4, unroll=2, token_noise=0.0, action_dropout=0.0,
                                                unroll_feed="argmax"), SamplingConfig())
    tokens, actions = torch.randint(0, 64, (2, 4, 16, 16)), torch.rand(2, 3, 4) * 2 - 1
    one = torch.full((2,), 1)
    eager, _ = loss_fn(tokens, actions, one)
    eager.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled_fn = torch.compile(loss_fn, fullgraph=True)
    compiled, _ = compiled_fn(tokens, actions, one)
    compiled.backward()
    # Inductor reorders float reductions: close, not bit-equal (fp32 sums of ~1e5 terms).
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5)
    for u in (2, 2):
        compiled_fn(tokens, actions, torch.full((2,), u))[0].backward()
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_per_window_unroll_is_each_window_unrolled_alone():
    """U per window (B,): each window's loss is the one it gets when the whole batch unrolls by its U
    (the batch shares one graph, whatever the mix)."""
    torch.manual_seed(0)
    from ochre.models.dynamics import Dynamics

    model = Dynamics(DynamicsConfig(**SMALL, impl="torch"))
    loss_fn = WorldLoss(model, WorldTrainConfig(window=6, unroll=3, token_noise=0.0, action_dropout=0.0,
                                                unroll_feed="argmax"), SamplingConfig())
    tokens, actions = torch.randint(0, 64, (3, 6, 16, 16)), torch.rand(3, 5, 4) * 2 - 1
    U = torch.tensor([0, 2, 3])
    mixed, logs = loss_fn(tokens, actions, U)
    alone = [loss_fn(tokens[i:i + 1], actions[i:i + 1], int(U[i]))[0] for i in range(3)]
    torch.testing.assert_close(mixed, torch.stack(alone).mean(), rtol=1e-5, atol=1e-6)
    assert logs["ce_unroll"] > 0 and logs["ce_teacher"] > 0
    with pytest.raises(RuntimeError):
        loss_fn(tokens, actions, torch.tensor([1, 2]))                      # one U per window


def test_non_finite_losses_skip_steps_then_stop(data, tmp_path, monkeypatch):
    import ochre.train.world as loop

    real = loop.WorldLoss.compute_loss
    monkeypatch.setattr(loop.WorldLoss, "compute_loss",
                        lambda self, *a: (torch.tensor(float("nan"), requires_grad=True), real(self, *a)[1]))
    with pytest.warns(UserWarning, match="non-finite loss"), pytest.raises(FloatingPointError, match="in a row"):
        _train(data / "tokens", tmp_path / "nan", steps=8)
    assert latest_checkpoint(tmp_path / "nan") is None          # no weights were touched or saved


def test_bf16_training_says_so_and_keeps_fp32_weights(data, tmp_path):
    summary = _train(data / "tokens", tmp_path / "bf16", steps=2, precision="bf16")
    assert summary["precision"] == "bf16" and np.isfinite(summary["loss"])
    assert all(p.dtype == torch.float32 for p in load_dynamics(tmp_path / "bf16")[0].parameters())


def test_minutes_bound_the_run(data, tmp_path):
    summary = _train(data / "tokens", tmp_path / "timed", steps=10_000, minutes=0.05)
    assert 0 < summary["step"] < 10_000 and summary["elapsed_s"] < 30


def test_eval_writes_the_section_6_files(data, tmp_path):
    _train(data / "tokens", tmp_path / "run", steps=3)
    seed_v3 = tmp_path / "seed"
    cfg = DynamicsConfig(**SMALL, impl="torch", warp=False, copy_bias=False, action_planes=False)
    train(data / "tokens", seed_v3, cfg, WorldTrainConfig(steps=2, batch=2, window=6, unroll=2,
                                                           unroll_feed="argmax", token_noise=0, action_dropout=0),
          SamplingConfig.argmax(), recipe_name="seed-v3", progress=False)
    assert main(["eval", str(tmp_path / "run"), str(data / "tokens"), "--out", str(tmp_path / "eval"),
                 "--compare", str(seed_v3), "--rollouts", "4", "--long-rollouts", "2", "--seeds", "0",
                 # The files and the rollout metrics only: the action model, the critics and the tours have
                 # tests of their own, and the quick demo runs every family end to end.
                 "--no-idm", "--no-c2st", "--tours", "0"]) == 0
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    names = ["psnr@1", "psnr@8", "psnr@32", "delta_psnr@16", "code_usage@256", "grad_ratio@256"]
    for prefix in ("", "repeat_frame/", "seed-v3/"):
        for name in names:
            assert np.isfinite(m[prefix + name]), prefix + name
    assert -1 <= m["yaw_response"] <= 1 and -1 <= m["real/yaw_response"] <= 1 and "seed-v3/yaw_response" in m
    # A count of distinct codes has no bootstrap interval over rollouts (docs/metrics.md: biased low).
    assert "code_usage@256/ci" not in m and "psnr@8/ci" in m and "grad_ratio@256/ci" in m
    z = np.load(tmp_path / "eval" / "rollouts.npz")
    n = len(z["keys"])
    assert z["real"].shape == z["dream"].shape == (n, 33, 64, 64, 3) and z["real"].dtype == np.uint8
    assert z["actions"].shape == (n, 32, 4) and z["other_actions"].shape == (n, 16, 4)
    assert z["dream_other"].shape == (n, 17, 64, 64, 3) and z["starts"].dtype == np.int64
    # The file (the first noise seed's dreams; one seed here) is enough to recompute a metric.
    from ochre.eval.rollouts import psnr
    assert psnr(z["dream"][:, 8], z["real"][:, 8]).mean() == pytest.approx(m["psnr@8"])
    assert (tmp_path / "eval" / "psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "eval" / "dream.mp4").stat().st_size > 1000


def test_a_run_plays_from_any_folder(data, tmp_path):
    """Token shards and a run made with relative paths from one folder play from another: the index
    records the clips and the tokenizer relative to itself, the run its token shards and tokenizer hash."""
    def ochre(*argv, cwd):
        r = subprocess.run([sys.executable, "-m", "ochre", *argv], cwd=cwd, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    here = tmp_path / "made_here"
    here.mkdir()
    (here / "clips").symlink_to(data / "clips")
    ochre("tokenize", "clips", "--tokenizer", str(data / "tok"), "--out", "tokens", cwd=here)
    index = json.loads((here / "tokens" / "index.json").read_text())
    assert index["clips"] == "../clips" and not index["tokenizer_checkpoint"].startswith("/")
    assert set(index["shift_per_unit"]) == {"yaw", "pitch", "strafe", "zoom"}
    ochre("train", "tokens", "--out", "run", "--steps", "2", "--batch", "2", "--window", "6", "--unroll", "1",
          "--shift-per-unit", "12", "12", cwd=here)
    (tmp_path / "elsewhere").mkdir()
    actions = tmp_path / "actions.txt"
    actions.write_text("0.5 0 0 1\n" * 3)
    r = ochre("play", "--headless", "--checkpoint", str(here / "run"), "--actions", str(actions),
              cwd=tmp_path / "elsewhere")
    assert "3 steps" in r.stdout and f"checkpoint {here / 'run'}" in r.stderr


def test_training_stops_without_the_shift_per_unit(data, tmp_path):
    """A token set that records no shift per unit action, whose clips cannot be found to measure it
    again, stops the run with what to do, instead of guessing one."""
    import shutil

    tokens = tmp_path / "tokens"
    shutil.copytree(data / "tokens", tokens)
    index = json.loads((tokens / "index.json").read_text())
    del index["shift_per_unit"]
    index["clips"] = "gone"
    (tokens / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="shift per unit action is not recorded"):
        _train(tokens, tmp_path / "run", steps=1)
    assert not (tmp_path / "run" / "checkpoints").exists()
    _train(tokens, tmp_path / "run", steps=1, shift=(12.0, 12.0))


def test_init_starts_a_new_run_from_a_models_weights(data, tmp_path):
    """--init: step 0 of the new run is the given model (a fresh optimizer trains it on), the run records
    the weights it started from, and a model of other settings is refused naming what differs."""
    _train(data / "tokens", tmp_path / "first", steps=3)
    first = _weights(tmp_path / "first")
    cfg, tcfg = DynamicsConfig(**SMALL, impl="torch"), WorldTrainConfig(steps=2, batch=2, window=6, unroll=2, warmup=1)
    train(data / "tokens", tmp_path / "on", cfg, tcfg, SamplingConfig(), seed=5, ckpt_every=1, log_every=1,
          progress=False, precision="fp32", keep=5, init=tmp_path / "first")     # another seed: other random weights
    steps = sorted((tmp_path / "on" / "checkpoints").iterdir())
    after_one = {k: v for k, v in load_dynamics(steps[0])[0].state_dict().items()}
    moved = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], after_one[k])]
    # One AdamW step at warm-up lr moves every trained weight by about lr: near the start, not at random init.
    assert moved and max((first[k] - after_one[k]).abs().max().item() for k in moved) < 0.05
    record = json.loads((steps[-1] / "config.json").read_text())["extra"]["run"]
    assert record["inputs"]["init"] == json.loads((latest_checkpoint(tmp_path / "first") / "config.json")
                                                  .read_text())["files"]["model.safetensors"]
    other = DynamicsConfig(**{**SMALL, "hidden": (8, 16)}, impl="torch")
    with pytest.raises(ValueError, match=r"settings differ.*hidden"):
        train(data / "tokens", tmp_path / "bad", other, tcfg, SamplingConfig(), progress=False, init=tmp_path / "first")
    assert main(["train", str(data / "tokens"), "--out", str(tmp_path / "tok"), "--init",
                 str(data / "tok"), "--steps", "1"]) == 2          # a tokenizer is not a world model
    with pytest.raises(ValueError, match="motion prior"):
        train(data / "tokens", tmp_path / "shift", cfg, tcfg, SamplingConfig(), progress=False, shift=(4.0, 4.0),
              init=tmp_path / "first")
    # --walk-zoom-scale: the model's own walking zoom, scaled; the rest of its motion prior kept.
    train(data / "tokens", tmp_path / "zoom", cfg, tcfg, SamplingConfig(), progress=False, precision="fp32",
          init=tmp_path / "first", zoom_scale=1.5)
    theirs, mine = (load_dynamics(latest_checkpoint(tmp_path / run))[0].config for run in ("first", "zoom"))
    assert theirs.zoom_per_unit > 0 and mine.zoom_per_unit == round(1.5 * theirs.zoom_per_unit, 4)
    assert (mine.shift_per_unit, mine.strafe_per_unit) == (theirs.shift_per_unit, theirs.strafe_per_unit)
    for bad in ("0", "nan"):
        assert main(["train", str(data / "tokens"), "--out", str(tmp_path / "badzoom"), "--init",
                     str(tmp_path / "first"), "--steps", "1", "--walk-zoom-scale", bad]) == 2
    with pytest.raises(ValueError, match="no motion prior"):                   # nothing to scale: said, not ignored
        train(data / "tokens", tmp_path / "nowarp", replace(cfg, warp=False), tcfg, SamplingConfig(),
              progress=False, zoom_scale=1.5)


def test_init_grows_a_pointer_that_starts_as_the_copy_prior(data, tmp_path):
    """--init from a model without a pointer, --pointer 1: every trained weight comes from it, the new pointer
    starts with POINTER_START of its weight on the prior's own code (so the grown model's distribution is
    within the moved weight of its parent's), and training moves the pointer too."""
    from ochre.models.dynamics import POINTER_START

    _train(data / "tokens", tmp_path / "first", steps=2)
    first = _weights(tmp_path / "first")
    cfg = DynamicsConfig(**SMALL, impl="torch", pointer=1)
    tcfg = WorldTrainConfig(steps=2, batch=2, window=6, unroll=2, warmup=1)
    train(data / "tokens", tmp_path / "grown", cfg, tcfg, SamplingConfig(), seed=5, ckpt_every=1, log_every=1,
          progress=False, precision="fp32", init=tmp_path / "first")
    grown = load_dynamics(latest_checkpoint(tmp_path / "grown"))[0]
    after = grown.state_dict()
    assert grown.config.pointer == 1 and {k for k in after if not k.startswith("pointer.")} == set(first)
    assert max((first[k] - after[k]).abs().max().item() for k in first if first[k].is_floating_point()) < 0.05
    bias = after["pointer.bias"]
    assert not torch.equal(bias, torch.full_like(bias, bias[0].item()).index_fill_(0, torch.tensor(4), 0.0))
    assert abs(torch.softmax(bias, dim=0)[4].item() - POINTER_START) < 0.01      # trained two steps from its start
    assert main(["train", str(data / "tokens"), "--out", str(tmp_path / "cli"), "--pointer", "1", "--steps", "1",
                 "--batch", "2", "--window", "6", "--unroll", "2"]) == 0
    assert load_dynamics(latest_checkpoint(tmp_path / "cli"))[0].config.pointer == 1
    assert main(["train", str(data / "tokens"), "--out", str(tmp_path / "neg"), "--pointer", "-1", "--steps", "1"]) == 2


def test_codebook_neighbours_are_the_nearest_other_codes_weighted_by_closeness():
    from ochre.train.world import codebook_neighbours

    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [10.0, 10.0], [0.0, 0.5]])
    codes, weights = codebook_neighbours(codebook, 2)
    assert codes.tolist() == [[4, 1], [0, 4], [4, 0], [2, 1], [0, 1]]
    assert (codes != torch.arange(5)[:, None]).all()                       # never a code itself
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(5))
    assert (weights[:, 0] >= weights[:, 1]).all()                          # the nearer weighs more
    with pytest.raises(ValueError, match="soft_neighbours"):
        codebook_neighbours(codebook, 5)


@pytest.mark.parametrize("copy_bias", [True, False])
def test_soft_targets_score_the_look_alikes_beside_the_target(copy_bias):
    """loss = (1 − s)·NLL(target) + s·Σ w·NLL(look-alike), by hand on one step; s = 0 is exact targets."""
    from ochre.models.dynamics import Dynamics
    from ochre.train.world import codebook_neighbours

    torch.manual_seed(0)
    model = Dynamics(DynamicsConfig(**{**SMALL, "copy_bias": copy_bias}, impl="torch"))
    neighbours = codebook_neighbours(torch.randn(64, 4), 3)
    tokens, actions = torch.randint(0, 64, (2, 3, 16, 16)), torch.rand(2, 2, 4) * 2 - 1
    kw = dict(window=3, unroll=0, token_noise=0.0, action_dropout=0.0)
    exact = WorldLoss(model, WorldTrainConfig(**kw), SamplingConfig())
    soft = WorldLoss(model, WorldTrainConfig(**kw, soft_targets=0.25), SamplingConfig(), neighbours=neighbours)
    act = model.with_flag(actions[:, 0])
    state = model.init_state(2)
    logits, _ = model.core(model.input_gates(tokens[:, 0], act), tokens[:, 0], act, state)
    lp = logits.movedim(1, -1)                                               # (B, h, w, K)
    lp = lp if copy_bias else lp.log_softmax(dim=-1)
    target = tokens[:, 1]
    nll = -lp.gather(-1, target[..., None])[..., 0]
    near = -(lp.gather(-1, neighbours[0][target]) * neighbours[1][target]).sum(-1)
    got, _, _ = soft._step_loss(model.input_gates(tokens[:, 0], act), tokens[:, 0], act, state, target)
    torch.testing.assert_close(got, (0.75 * nll + 0.25 * near).mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    got_exact, _, _ = exact._step_loss(model.input_gates(tokens[:, 0], act), tokens[:, 0], act, state, target)
    torch.testing.assert_close(got_exact, nll.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="neighbours"):
        WorldLoss(model, WorldTrainConfig(**kw, soft_targets=0.25), SamplingConfig())


def test_a_soft_target_run_reads_the_tokenizers_codebook(data, tmp_path):
    assert main(["train", str(data / "tokens"), "--out", str(tmp_path / "soft"), "--steps", "2", "--batch", "2",
                 "--window", "6", "--unroll", "2", "--soft-targets", "0.3", "--soft-neighbours", "4",
                 "--precision", "fp32"]) == 0
    record = json.loads((latest_checkpoint(tmp_path / "soft") / "config.json").read_text())["extra"]["train"]
    assert record["soft_targets"] == 0.3 and record["soft_neighbours"] == 4
    assert main(["train", str(data / "tokens"), "--out", str(tmp_path / "bad"), "--steps", "1",
                 "--soft-targets", "1.0"]) == 2                              # a share below 1, said so


def test_the_decoding_feed_draws_from_the_boosted_dream_and_the_loss_never_sees_the_boost():
    """unroll_feed 'decoding': the unroll's next input comes from the distribution the live step draws
    from (the copy prior's proposals boosted, walk share included), while the loss is the model's own
    NLL, equal to the 'sample' feed's."""
    from ochre.models.dynamics import Dynamics

    torch.manual_seed(0)
    model = Dynamics(DynamicsConfig(**SMALL, impl="torch"))
    kw = dict(window=4, unroll=2, token_noise=0.0, action_dropout=0.0)
    sampling = SamplingConfig()
    own = WorldLoss(model, WorldTrainConfig(**kw), sampling)
    dream = WorldLoss(model, WorldTrainConfig(**kw, unroll_feed="decoding"), sampling)
    tokens, actions = torch.randint(0, 64, (2, 4, 16, 16)), torch.rand(2, 3, 4) * 2 - 1
    actions[1, :, 2:] = 0                                                   # one window turns only, one walks too
    act, state, x = model.with_flag(actions[:, 0]), model.init_state(2), tokens[:, 0]
    g = model.input_gates(x, act)
    ce_own, feed_own, _ = own._step_loss(g, x, act, state, tokens[:, 1])
    ce_dream, feed_dream, _ = dream._step_loss(g, x, act, state, tokens[:, 1])
    torch.testing.assert_close(ce_dream, ce_own, rtol=1e-6, atol=1e-6)      # the boost is not in the loss
    live, _ = model.step(x, actions[:, 0], state, boost=sampling.boosts, parts=True)
    torch.testing.assert_close(feed_dream, live.log_probs().permute(0, 3, 1, 2), rtol=1e-6, atol=1e-5)
    plain, _ = model.step(x, actions[:, 0], state)
    torch.testing.assert_close(feed_own, plain, rtol=1e-6, atol=1e-5)
    lift = (feed_dream - feed_own).movedim(1, -1).gather(-1, live.codes[..., None])[..., 0]   # (B, h, w)
    assert lift.min() > 0 and (lift[0] < lift[1]).float().mean() > 0.9     # boosted, less while walking
    loss, logs = dream(tokens, actions, 2)
    assert torch.isfinite(loss) and logs["ce_unroll"] > 0
    with pytest.raises(ValueError, match="copy_bias"):
        WorldLoss(Dynamics(DynamicsConfig(**SMALL, impl="torch", copy_bias=False)),
                  WorldTrainConfig(**kw, unroll_feed="decoding"), sampling)
    with pytest.raises(ValueError, match="unroll_feed"):
        WorldTrainConfig(**kw, unroll_feed="boosted")
