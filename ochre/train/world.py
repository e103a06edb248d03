"""`ochre train`: the dynamics model on windows of token shards, with rollout training.

Legend: B batch, T window frames, U unroll steps, K codebook size, h w token grid.

A window of T frames from one trajectory is split into T−1−U teacher-forced steps (inputs are
the recorded codes, a random share of them replaced by random codes) and U autoregressive steps
whose inputs are the model's own samples (detached), U growing 1 → unroll over the first part
of the run (U is data to the graph, not its shape: a compiled run compiles once). Every step
predicts the next frame's codes (cross-entropy over K). A share of the windows drops its actions
(the null action), which is what lets inference use action guidance.

Recipes (same model family, same data, same budget):
  ochre    FiLM + action planes + motion prior (turn, look, strafe, walk) + copy prior with a
           panorama memory; token noise; action dropout; unroll on samples; ships sampling.
  seed-v3  the earlier prototype: FiLM only; no noise, no dropout; unroll fed argmax; argmax
           decoding. The baseline every claim is compared against.
  blind    the ochre recipe with every action replaced by the null action, in training and
           inference: the action-blind model that calibrates the control metrics.

Exact resume: the checkpoint holds weights, optimizer, step, data position, RNG states and the
elapsed training time (so --minutes budgets survive a kill).
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ochre.choices import RECIPES, UNROLL_FEEDS
from ochre.data.loader import Split, in_split, rank_shards, split_sources, window_batches
from ochre.data.shards import index_digest, read_index
from ochre.device import train_autocast, train_precision
from ochre.io import record_path
from ochre.models.checkpoint import CheckpointError, load_weights, read_checkpoint_config
from ochre.models.dynamics import MOTION_PRIOR, Dynamics, DynamicsConfig
from ochre.models.sampling import SamplingConfig, sample_tokens
from ochre.train import checkpoint as ckpt
from ochre.train.common import RunLogger, cosine_lr
from ochre.train.distributed import DistInfo, check_ranks_agree, mean_across_ranks, setup, teardown
from ochre.train.run_folder import check_every_rank_has_data, claim_run_folder, truncate_log

MAX_BAD_STEPS = 5   # consecutive non-finite losses before the run stops


@dataclass
class WorldTrainConfig:
    steps: int = 3000
    batch: int = 16
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    window: int = 12               # T frames per window
    unroll: int = 4                # U at the end of the curriculum (DIAMOND unrolls 4)
    curriculum: float = 0.5        # share of the run over which U grows from 1 to `unroll`
    token_noise: float = 0.1       # per window, a share uniform in [0, this] of input codes is randomised
    action_dropout: float = 0.1    # share of windows trained with the null action
    # What the unroll feeds back: "sample" (the model's own distribution at the shipped temperature,
    # without the decoding's boosts), "decoding" (the shipped decoding itself, boosts included: the
    # inputs a dream feeds the model) or "argmax" (seed-v3).
    unroll_feed: str = "sample"
    # Look-alike credit: a share of each target code's mass goes to its nearest codes in the
    # tokenizer's codebook (soft_neighbours of them, weighted by closeness; codebook_neighbours), so a
    # prediction one code off in look is not scored as wrong as any other code. 0: exact targets.
    soft_targets: float = 0.0
    soft_neighbours: int = 16
    minutes: float | None = None   # wall-time budget; the schedule follows whichever of steps/minutes ends first

    def __post_init__(self):
        if self.window < 2 or not 0 <= self.unroll <= self.window - 2:
            raise ValueError(f"need window >= 2 and 0 <= unroll <= window - 2, got {self.window}, {self.unroll}")
        if self.unroll_feed not in UNROLL_FEEDS:
            raise ValueError(f"unroll_feed must be one of {UNROLL_FEEDS}, got {self.unroll_feed!r}")
        if not (0 <= self.token_noise < 1 and 0 <= self.action_dropout < 1 and 0 < self.curriculum <= 1):
            raise ValueError(f"token_noise, action_dropout in [0, 1), curriculum in (0, 1]: {self}")
        if not 0 <= self.soft_targets < 1 or self.soft_neighbours < 1:
            raise ValueError(f"soft_targets in [0, 1) and soft_neighbours >= 1, got {self.soft_targets}, "
                             f"{self.soft_neighbours}")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")


def recipe(name: str, preset: str = "tiny", **train_overrides):
    """(DynamicsConfig, WorldTrainConfig, SamplingConfig) of a recipe and model preset."""
    if name == "ochre":
        model, train, sampling = dict(memory=True), {}, SamplingConfig()
    elif name == "seed-v3":
        model = dict(action_planes=False, warp=False, copy_bias=False)
        train = dict(token_noise=0.0, action_dropout=0.0, unroll_feed="argmax")
        sampling = SamplingConfig.argmax()
    elif name == "blind":                # calibration: the ochre recipe with every action dropped
        model, train, sampling = dict(memory=True, blind=True), {}, SamplingConfig()
    else:
        raise ValueError(f"unknown recipe {name!r}; choose from {RECIPES}")
    if preset == "base":
        train = {**train, "batch": 64, "lr": 1e-3, "steps": 50_000, "window": 16, "unroll": 6}
    known = {f.name for f in fields(WorldTrainConfig)}
    if set(train_overrides) - known:
        raise ValueError(f"unknown training options {sorted(set(train_overrides) - known)}")
    return DynamicsConfig.preset(preset, **model), WorldTrainConfig(**{**train, **train_overrides}), sampling


class WorldLoss(nn.Module):
    """compute_loss(batch) for the dynamics model under a recipe; DDP wraps this module.

    compile_steps: torch.compile the two pieces every window repeats — one recurrent step with its
    cross-entropy, and the first layer's input convolution — instead of the whole unrolled window
    (what `ochre train --compile` compiles). The small graphs compile faster (about 45 s against
    100 s for the tiny preset on 2 cores) but train slower (1.6 against 1.0-1.1 s a step at batch
    16 x 12 frames); both serve every curriculum length U with one graph (compute_loss); see
    bench/train.py for what each choice trains per second.
    """

    def __init__(self, model: Dynamics, tcfg: WorldTrainConfig, sampling: SamplingConfig,
                 compile_steps: bool = False, neighbours: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.model, self.tcfg, self.sampling = model, tcfg, sampling
        if tcfg.unroll_feed == "decoding" and not model.config.copy_bias:
            raise ValueError("unroll_feed 'decoding' feeds the copy prior's boosted decoding: it needs a model "
                             "with copy_bias")
        if (tcfg.soft_targets > 0) != (neighbours is not None):
            raise ValueError("soft targets need the codebook's neighbours (codebook_neighbours), and only they do")
        if neighbours is not None:
            self.register_buffer("neighbour_codes", neighbours[0], persistent=False)      # (K, n) long
            self.register_buffer("neighbour_weights", neighbours[1], persistent=False)    # (K, n), rows sum to 1
        self._step_fn, self._gates_fn = self._step_loss, model.input_gates
        if compile_steps:
            self._step_fn = torch.compile(self._step_loss, fullgraph=True)
            self._gates_fn = torch.compile(model.input_gates, fullgraph=True)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor, unroll):
        return self.compute_loss(tokens, actions, unroll)

    def _corrupt(self, tokens: torch.Tensor) -> torch.Tensor:
        """Replace a per-window random share (uniform in [0, token_noise]) of codes with random codes."""
        if self.tcfg.token_noise == 0:
            return tokens
        B = tokens.shape[0]
        rate = torch.rand(B, 1, 1, 1, device=tokens.device) * self.tcfg.token_noise
        noise = torch.randint_like(tokens, self.model.config.codebook_size)
        return torch.where(torch.rand(tokens.shape, device=tokens.device) < rate, noise, tokens)

    def _step_loss(self, g: torch.Tensor, x: torch.Tensor, act: torch.Tensor, state: list[torch.Tensor],
                   target: torch.Tensor):
        """One recurrent step and its loss: -> (per-window CE (B,), the logits (B, K, h, w) the unroll
        draws its next input from, new state). Those are the loss's own, except with the "decoding"
        feed: the same distribution with the decoding's boosts at the proposals, which the loss never sees."""
        if self.tcfg.unroll_feed == "decoding":
            mixture, state = self.model.core(g, x, act, state, boost=self.sampling.boosts, parts=True)
            lp = mixture._replace(extra=None).log_probs()                           # the model's own
            logits, feed = lp.permute(0, 3, 1, 2), mixture.boosted(lp.detach()).permute(0, 3, 1, 2)
        else:
            logits, state = self.model.core(g, x, act, state)                   # (B, K, h, w)
            feed = logits
        rows = logits.movedim(1, -1).flatten(0, 2)                                # (B·h·w, K), contiguous
        # With the copy prior the logits are log-probabilities already: the loss is their NLL (a
        # log-softmax over them is the identity, with the same gradient for every parameter).
        loss = F.nll_loss if self.model.config.copy_bias else F.cross_entropy
        ce = loss(rows, target.flatten(), reduction="none").view(target.shape)   # (B, h, w)
        if self.tcfg.soft_targets > 0:
            ce = (1 - self.tcfg.soft_targets) * ce + self.tcfg.soft_targets * self._look_alike_nll(rows, target)
        return ce.mean(dim=(1, 2)), feed, state

    def _look_alike_nll(self, rows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The NLL of the target's look-alikes, weighted by closeness: rows (N, K) logits, target (B, h, w)
        -> (B, h, w)."""
        lp = rows if self.model.config.copy_bias else rows.log_softmax(dim=-1)      # (N, K) log-probabilities
        flat = target.flatten()
        near = lp.gather(1, self.neighbour_codes[flat])                              # (N, n)
        return -(near * self.neighbour_weights[flat]).sum(dim=1).view(target.shape)

    def compute_loss(self, tokens: torch.Tensor, actions: torch.Tensor, unroll):
        """tokens (B, T, h, w) int64, actions (B, T−1, 4), unroll: U, an int or per window (B,) int64,
        at most tcfg.unroll -> (loss, logs).

        The graph has one shape for every U: the first T−1−tcfg.unroll steps are teacher-forced in
        every window (their input convolution is one batched call), and each of the last
        tcfg.unroll steps takes, per window, the model's own sample where that window unrolls
        (t >= T−1−U) and the recorded codes where it does not. A whole-window torch.compile then
        compiles once for the whole curriculum; with U in the graph's shape it compiled once per U
        (about 100 s each for the tiny preset on 2 cores: 4 of a 12-minute demo's minutes)."""
        model, B, T = self.model, tokens.shape[0], tokens.shape[1]
        U = torch.as_tensor(unroll, device=tokens.device).expand(B)             # (B,) per-window unroll
        tf = T - 1 - self.tcfg.unroll                                           # teacher-forced in every window
        present = (torch.rand(B, device=tokens.device) >= self.tcfg.action_dropout).float()   # (B,)
        act = model.with_flag(actions, present[:, None].expand(B, T - 1))       # (B, T−1, 5)
        # Time-major, so that each step's slices are contiguous like an own-sample step's inputs.
        inputs = self._corrupt(tokens[:, :T - 1]).transpose(0, 1).contiguous()  # (T−1, B, h, w)
        # The first layer's input convolution of the always teacher-forced frames in one batched call.
        gx0 = self._gates_fn(inputs[:tf].flatten(0, 1), act[:, :tf].transpose(0, 1).flatten(0, 1))
        gx0 = gx0.unflatten(0, (tf, B))                                         # (tf, B, 3C, h, w)
        own = torch.arange(T - 1, device=tokens.device)[None, :] >= (T - 1 - U)[:, None]   # (B, T−1)
        state = model.init_state(B, tokens.device)
        losses, current = [], None
        for t in range(T - 1):
            if t < tf:
                x, g = inputs[t], gx0[t]
                state = model.realign(state)
            else:                                            # own predictions where the window unrolls
                x = torch.where(own[:, t, None, None], current, inputs[t])
                g = self._gates_fn(x, act[:, t])
                realigned = model.realign(state)                                # where the codes are recorded
                state = [*state[:-1], torch.where(own[:, t, None], state[-1], realigned[-1])]
            ce, logits, state = self._step_fn(g, x, act[:, t], state, tokens[:, t + 1])
            losses.append(ce)
            if t + 1 >= tf:
                with torch.no_grad():
                    current = self._feed(logits.detach())
        per_step = torch.stack(losses, dim=1)                                   # (B, T−1)
        loss = per_step.mean()
        with torch.no_grad():
            mask = own.float()
            rolled = (U > 0).float()                                            # (B,)
            logs = {"ce_teacher": (per_step * (1 - mask)).sum() / (1 - mask).sum().clamp(min=1),
                    "ce_unroll": (per_step * mask).sum() / mask.sum().clamp(min=1),
                    "unroll_acc": ((current == tokens[:, -1]).float().mean(dim=(1, 2)) * rolled).sum()
                    / rolled.sum().clamp(min=1)}
            if model.config.copy_bias:
                logs["copy_logit"] = model.copy_logit.detach()
            if model.config.copy_bias and model.config.fill:
                logs["fill_logit"] = model.fill_logit.detach()
        return loss, logs

    def _feed(self, logits: torch.Tensor) -> torch.Tensor:
        """The next input of the unroll from the step's feed logits: a sample at the shipped temperature
        and top-k. With the "sample" feed, of the model's own distribution without the decoding's
        proposal boosts: unsoftened, the unroll shows the model its own errors, which the boosted
        decoding (mostly copies) would hide. With the "decoding" feed, of the boosted distribution: the
        errors a dream makes, which are the ones the model meets in play."""
        if self.tcfg.unroll_feed == "argmax":
            return logits.argmax(dim=1)
        u = torch.rand(logits.shape[0], *logits.shape[2:], device=logits.device)
        return sample_tokens(logits, u, self.sampling)


def codebook_neighbours(codebook: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each code's n nearest other codes in the tokenizer's codebook (K, D) (Euclidean, the quantiser's
    distance) and their weights: softmax of −d² / s², s² the mean squared distance of a code to its
    nearest other code, so a near-duplicate weighs most and a code twice as far e^−3 times less
    -> codes (K, n) long, weights (K, n) float32 whose rows sum to 1."""
    cb = codebook.detach().float()
    if not 1 <= n < len(cb):
        raise ValueError(f"soft_neighbours must be in [1, {len(cb) - 1}] for a codebook of {len(cb)}, got {n}")
    d2 = torch.cdist(cb, cb).square()
    d2.fill_diagonal_(float("inf"))                                       # a code is not its own look-alike
    near, codes = d2.topk(n, dim=1, largest=False)                        # (K, n) ascending
    scale = near[:, 0].mean().clamp(min=1e-12)
    return codes, torch.softmax(-near / scale, dim=1)


def _neighbours_for(tcfg: WorldTrainConfig, tokens_root, index: dict, device) -> tuple | None:
    """codebook_neighbours of the tokenizer that made the tokens, when the run asks for soft targets."""
    if tcfg.soft_targets == 0:
        return None
    from ochre.data.shards import indexed_folder
    from ochre.models.checkpoint import load_tokenizer

    tokenizer = load_tokenizer(indexed_folder(tokens_root, "tokenizer_checkpoint", index))
    return tuple(x.to(device) for x in codebook_neighbours(tokenizer.codebook, tcfg.soft_neighbours))


def motion_prior(index: dict, tokens_root, cfg: DynamicsConfig, given=None, moves: bool = True) -> dict:
    """The motion prior's geometry as DynamicsConfig fields, from what `ochre tokenize` measured on the
    train clips and recorded in the index (else measured again on the clips the index records):
    tokens of picture shift per unit yaw and pitch (`given` in pixels overrides them, from
    --shift-per-unit), per unit strafe, and the log zoom per unit of walking. Yaw and pitch are
    required: without them it stops with a ValueError saying what to do, never a guess; a strafe or
    walk the clips never make alone leaves that prior off (0), and so does `moves` False (an ablation)."""
    from ochre.tokenize import shift_per_unit

    px_per_token = index.get("size", 64) / cfg.grid
    found = index.get("shift_per_unit")
    if found is None:                                        # token shards made before it was recorded
        from ochre.data.shards import indexed_folder

        try:
            found = shift_per_unit(indexed_folder(tokens_root, "clips", index))
        except FileNotFoundError as e:
            if given is not None:                            # yaw and pitch given; strafe and walk unknown: off
                warnings.warn(f"{tokens_root}: no shift per unit recorded and no clips to measure one ({e}); "
                              "strafe and walk priors off, yaw and pitch from --shift-per-unit", stacklevel=2)
                found = {}
            else:
                raise ValueError(f"{tokens_root}: the shift per unit action is not recorded with the token shards "
                                 f"and cannot be measured ({e}); re-run `ochre tokenize --overwrite`, or pass "
                                 "--shift-per-unit YAW_PX PITCH_PX") from None
    if given is not None:
        found = {**found, "yaw": float(given[0]), "pitch": float(given[1])}
    missing = [name for name in ("yaw", "pitch") if found.get(name) is None]
    if missing:
        raise ValueError(f"{tokens_root}: the clips never {' or '.join(missing)} alone often enough to measure how far "
                         "the picture moves per unit action (the warp prior needs it); pass --shift-per-unit "
                         "YAW_PX PITCH_PX (`ochre data check` on data that turns prints them), or --recipe seed-v3")
    return {"shift_per_unit": tuple(round(found[n] / px_per_token, 3) for n in ("yaw", "pitch")),
            "strafe_per_unit": round((found.get("strafe") or 0.0) / px_per_token, 3) if moves else 0.0,
            "zoom_per_unit": round(found.get("zoom") or 0.0, 4) if moves else 0.0}


def unroll_at(progress: float, tcfg: WorldTrainConfig) -> int:
    """Curriculum: U grows linearly from min(1, unroll) to `unroll` over the first `curriculum` of the run."""
    lo = min(1, tcfg.unroll)
    return lo + int(round((tcfg.unroll - lo) * min(1.0, progress / tcfg.curriculum)))


class _Budget:
    """Run progress in [0, 1] from steps and, with --minutes, from training time (kept across resumes)."""

    def __init__(self, tcfg: WorldTrainConfig, elapsed: float):
        self.tcfg, self.before, self.t0 = tcfg, elapsed, time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.t0

    def progress(self, step: int) -> float:
        p = step / self.tcfg.steps
        if self.tcfg.minutes:
            p = max(p, self.elapsed / (60 * self.tcfg.minutes))
        return min(p, 1.0)


RUN_OUTPUTS = ("checkpoints", "log.jsonl", "tb")


def run_record(tokens_root, cfg: DynamicsConfig, tcfg: WorldTrainConfig, sampling: SamplingConfig, *,
               recipe_name: str, seed: int, workers: int, ranks: int, tokenizer: str | None = None,
               init: str | None = None) -> dict:
    """Everything that must match for --resume to continue the exact run (ochre.train.run_folder):
    model, recipe, training settings, seed, the data stream's shape, the token set, the hash of
    the tokenizer that made it (the model lookup pairs the run with that tokenizer) and the hash of
    the weights it started from (`init`, None for random ones). `steps` and `minutes` may grow on
    resume; `impl` and --compile pick kernels, not results."""
    model = {k: v for k, v in asdict(cfg).items() if k != "impl"}
    train = {k: v for k, v in asdict(tcfg).items() if k not in ("steps", "minutes")}
    return {"kind": "world-run",
            "config": {**train, "recipe": recipe_name, "sampling": asdict(sampling), "seed": seed,
                       "workers": workers, "ranks": ranks, "model": model},
            "inputs": {"tokens": index_digest(tokens_root), "tokenizer": tokenizer,
                       **({"init": init} if init else {})}}


def _windows_here(index: dict, window: int, rank: int, world: int, seed: int, epoch: int) -> int:
    """The fewest training windows this rank reads in an epoch (any phase), from index.json alone."""
    splits = split_sources(index)
    mine = rank_shards(index["shards"], seed, epoch, rank, world)
    # A clip of k frames cut from a random phase p < T yields ceil((k − T + 1 − p) / T) windows.
    return sum(max(0, -(-(s["frames"] - 2 * window + 2) // window)) for shard in mine
               for s in shard["samples"] if in_split(s["source"], "train", splits))


@dataclass
class _Run:
    """One process's training state: what the loop advances and the checkpoints save."""
    info: DistInfo
    out: Path
    model: Dynamics
    opt: torch.optim.Optimizer
    loss_fn: nn.Module
    batches: Iterator
    budget: _Budget
    extra: dict                  # what every checkpoint records besides the loop's position
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    precision: str = "fp32"      # of the train step (ochre.device.train_precision)


def start_run(tokens_root, out, cfg: DynamicsConfig, tcfg: WorldTrainConfig, sampling: SamplingConfig,
              info: DistInfo, *, recipe_name: str, preset: str, seed: int, compile: bool, resume: bool,
              overwrite: bool, workers: int, shift: tuple[float, float] | None = None, moves: bool = True,
              init=None, zoom_scale: float = 1.0) -> _Run:
    """Check the token set and the run folder, build model, optimizer and data, restore a checkpoint
    (or, for a new run, start from the weights of the dynamics checkpoint `init`)."""
    index = read_index(tokens_root)                          # a wrong path fails here, before any work
    if index.get("kind") != "tokens":
        raise ValueError(f"{tokens_root} holds clip shards, not token shards: run `ochre tokenize` first")
    if index.get("codebook_size", cfg.codebook_size) != cfg.codebook_size:
        cfg = replace(cfg, codebook_size=index["codebook_size"])
    if init is not None and shift is not None:
        raise ValueError("--init and --shift-per-unit: a model trained on keeps the motion prior it learned with")
    if not (math.isfinite(zoom_scale) and zoom_scale > 0):
        raise ValueError(f"--walk-zoom-scale {zoom_scale}: must be a positive number")
    if zoom_scale != 1.0 and not cfg.warp:
        raise ValueError(f"--walk-zoom-scale {zoom_scale}: this recipe has no motion prior (warp) to scale")
    start = _check_init(init, cfg, index) if init is not None else None                # (hash, motion prior)
    if cfg.warp:
        # A model trained on keeps the motion prior it learned with (measured on its own data), its walking
        # zoom scaled by --walk-zoom-scale (1 by default).
        cfg = replace(cfg, **(start[1] if start else motion_prior(index, tokens_root, cfg, shift, moves)))
        cfg = replace(cfg, zoom_per_unit=round(cfg.zoom_per_unit * zoom_scale, 4))
        if info.is_main:
            print(f"motion prior: the picture moves {cfg.shift_per_unit[0]} tokens per unit yaw, "
                  f"{cfg.shift_per_unit[1]} per unit pitch, {cfg.strafe_per_unit} per unit strafe, and zooms by "
                  f"e^{cfg.zoom_per_unit} per unit of walking forward", file=sys.stderr)
    out = Path(out)
    record = run_record(tokens_root, cfg, tcfg, sampling, recipe_name=recipe_name, seed=seed, workers=workers,
                        ranks=info.world, tokenizer=index.get("tokenizer"), init=start and start[0])
    latest = claim_run_folder(out, record, info, resume=resume, overwrite=overwrite, outputs=RUN_OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + info.rank)                      # ranks draw different noise/samples
    model = Dynamics(cfg).to(info.device)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=(0.9, 0.99), weight_decay=tcfg.weight_decay)
    extra = {"seed": seed, "recipe": recipe_name, "preset": preset, "run": record, "train": asdict(tcfg),
             "sampling": asdict(sampling), "tokens_dir": record_path(tokens_root, out)}
    run = _Run(info, out, model, opt, None, None, _Budget(tcfg, 0.0), extra)
    if latest is not None:
        _restore(run, latest)
    elif init is not None:
        load_weights(init, model, new=("pointer.",) if cfg.pointer else ())
    here = _windows_here(index, tcfg.window, info.rank, info.world, seed, run.epoch)
    check_every_rank_has_data(tokens_root, here, tcfg.batch, len(index["shards"]))
    neighbours = _neighbours_for(tcfg, tokens_root, index, info.device)
    loss_fn: nn.Module = WorldLoss(model, tcfg, sampling, neighbours=neighbours)
    if info.world > 1:
        loss_fn = torch.nn.parallel.DistributedDataParallel(
            loss_fn, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    if compile:
        loss_fn = torch.compile(loss_fn, fullgraph=info.world == 1)
    run.loss_fn = loss_fn
    run.batches = window_batches(tokens_root, tcfg.window, tcfg.batch, seed=seed, split="train", workers=workers,
                                 dist=Split(info.rank, info.world), start_epoch=run.epoch, skip=run.batch_in_epoch)
    return run


def _check_init(init, cfg: DynamicsConfig, index: dict) -> tuple[str, dict]:
    """The weights' hash and the motion prior of the dynamics checkpoint (or run folder) `init`,
    checked to fit the run: the same model settings but the motion prior (the model keeps its own: a
    re-measurement on re-encoded clips moves it in the third decimal) and a model of the tokenizer
    that made these tokens, else a ValueError that names what differs. (start_run loads the weights.)"""
    meta = read_checkpoint_config(init)
    if meta.get("kind") != "dynamics":
        raise ValueError(f"--init {init}: a {meta.get('kind')} checkpoint, not a world model's")
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("impl", *MOTION_PRIOR)}
    try:
        theirs = asdict(DynamicsConfig(**{k: v for k, v in meta["config"].items() if k != "impl"}))
    except TypeError as e:
        raise ValueError(f"--init {init}: its config does not fit this version's DynamicsConfig ({e})") from e
    if theirs["pointer"] == 0:          # a model without a pointer may grow one (it starts as the copy prior)
        theirs["pointer"] = mine["pointer"]
    differ = [f"{k} {theirs.get(k)} (here {v})" for k, v in mine.items() if theirs.get(k) != v]
    if differ:
        raise ValueError(f"--init {init}: its model settings differ from this run's: {', '.join(differ)}")
    made_by = meta.get("extra", {}).get("run", {}).get("inputs", {}).get("tokenizer")
    if made_by and index.get("tokenizer") and made_by != index["tokenizer"]:
        raise ValueError(f"--init {init}: trained on the codes of tokenizer {made_by[:16]}, these tokens are "
                         f"tokenizer {index['tokenizer'][:16]}'s")
    return meta["files"]["model.safetensors"], {k: theirs[k] for k in MOTION_PRIOR}


def _restore(run: _Run, latest: Path) -> None:
    """Weights, optimizer, data position, RNGs and elapsed time of a checkpoint into `run`."""
    meta = ckpt.load_checkpoint(latest, run.model, run.opt)
    extra = meta["extra"]
    run.step, run.epoch, run.batch_in_epoch = meta["step"], extra["epoch"], extra["batch_in_epoch"]
    run.budget = _Budget(run.budget.tcfg, extra["elapsed_s"])
    ckpt.restore_rng_state(extra["rng"][run.info.rank] if isinstance(extra["rng"], list) else extra["rng"])
    if run.info.is_main:
        truncate_log(run.out, run.step)
        print(f"resuming from {latest} at step {run.step}", file=sys.stderr)


def _save(run: _Run, keep: int) -> None:
    rngs = _gather_rng(run.info)                             # a collective: every rank takes part
    if run.info.is_main:
        ckpt.save_checkpoint(run.out, run.step, run.model, run.opt, keep=keep, extra={
            **run.extra, "epoch": run.epoch, "batch_in_epoch": run.batch_in_epoch, "elapsed_s": run.budget.elapsed,
            "rng": rngs})


def _optimizer_step(run: _Run, tcfg: WorldTrainConfig, loss: torch.Tensor) -> torch.Tensor | None:
    """Backward and update, unless the loss is non-finite on any rank (then the step is skipped:
    a bad batch must not reach the weights, and every rank takes the same decision). Returns the
    gradient norm, or None for a skipped step. Sync point, once per step."""
    finite = torch.isfinite(loss.detach()).float()
    if run.info.world > 1:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if not bool(finite):
        run.opt.zero_grad(set_to_none=True)
        return None
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), tcfg.grad_clip)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return grad_norm


def train_loop(run: _Run, tcfg: WorldTrainConfig, *, ckpt_every: int, log_every: int, keep: int,
               progress: bool) -> dict:
    """Advance `run` until its steps or minutes are spent; returns the last logged values."""
    from tqdm import tqdm

    info, budget, label = run.info, run.budget, run.extra["recipe"]
    if run.step and (run.step >= tcfg.steps or budget.progress(run.step) >= 1.0) and info.is_main:
        print(f"world model: already complete at step {run.step} ({budget.elapsed:.0f} s of training)", file=sys.stderr)
    logger = RunLogger(run.out, info.is_main)
    autocast = train_autocast(info.device, run.precision)
    # The bar counts percent of the run: steps, or wall time when --minutes ends it first.
    bar = tqdm(total=100, initial=round(100 * budget.progress(run.step), 1), desc=f"world model ({label})",
               unit="%", bar_format="{l_bar}{bar}| {n:.0f}/100% [{elapsed}<{remaining}{postfix}]",
               disable=not (progress and info.is_main), file=sys.stderr)
    t_log, frames_seen, bad, last = time.perf_counter(), 0, 0, {}
    run.model.train()
    while run.step < tcfg.steps and budget.progress(run.step) < 1.0:
        run.epoch, n, batch = next(run.batches)
        run.batch_in_epoch = n + 1
        tokens = batch["tokens"].to(info.device, non_blocking=True)             # (B, T, h, w)
        actions = batch["actions"].to(info.device, non_blocking=True)           # (B, T−1, 4)
        p = budget.progress(run.step)
        unroll = unroll_at(p, tcfg)
        lr = cosine_lr(p, tcfg.lr, tcfg.warmup / tcfg.steps)
        for group in run.opt.param_groups:
            group["lr"] = lr
        with autocast:     # U as a tensor: one compiled graph for the whole curriculum (compute_loss)
            loss, logs = run.loss_fn(tokens, actions, torch.full((tokens.shape[0],), unroll, device=info.device))
        grad_norm = _optimizer_step(run, tcfg, loss)
        if grad_norm is None:
            bad += 1
            warnings.warn(f"step {run.step}: non-finite loss ({float(loss)}); step skipped ({bad}/{MAX_BAD_STEPS})",
                          stacklevel=1)
            if bad >= MAX_BAD_STEPS:
                raise FloatingPointError(f"{MAX_BAD_STEPS} non-finite losses in a row at step {run.step}; stopping "
                                         f"with the weights of the last good step (newest checkpoint in {run.out})")
            continue
        bad = 0
        run.step += 1
        frames_seen += tokens.shape[0] * (tokens.shape[1] - 1) * info.world
        bar.update(round(100 * budget.progress(run.step), 1) - bar.n)
        done = run.step >= tcfg.steps or budget.progress(run.step) >= 1.0
        if run.step % log_every == 0 or done:
            logs = mean_across_ranks({"loss": loss.detach(), "grad_norm": grad_norm, **logs})
            last = {k: float(v) for k, v in logs.items()}                     # sync point: log interval
            last.update(lr=lr, unroll=unroll, frames_per_s=frames_seen / (time.perf_counter() - t_log),
                        elapsed_s=budget.elapsed, precision=run.precision)
            t_log, frames_seen = time.perf_counter(), 0
            logger.log(run.step, last)
            bar.set_postfix(step=run.step, loss=f"{last['loss']:.3f}", unroll=unroll)
        if run.step % ckpt_every == 0 or done:
            _save(run, keep)
    bar.close()
    return last


def train(tokens_root, out, cfg: DynamicsConfig, tcfg: WorldTrainConfig, sampling: SamplingConfig, *,
          recipe_name: str = "ochre", preset: str = "tiny", seed: int = 0, compile: bool = False,
          resume: bool = False, overwrite: bool = False, workers: int = 0, device: str | None = None,
          ckpt_every: int = 200, log_every: int = 25, keep: int = 3, progress: bool = True,
          shift: tuple[float, float] | None = None, moves: bool = True, precision: str = "auto",
          init=None, zoom_scale: float = 1.0) -> dict:
    """Train (or resume) a world-model run in `out`; returns a summary of the last logged step.
    moves False leaves the motion prior of the movement keys off (an ablation); precision: of the
    train step (ochre.device.train_precision); init: a dynamics checkpoint whose weights a new run
    starts from (a fresh optimizer and schedule: training a model on further); zoom_scale: the
    walking zoom of the motion prior, times the measured one (or init's)."""
    info = setup(device)
    run = start_run(tokens_root, out, cfg, tcfg, sampling, info, recipe_name=recipe_name, preset=preset, seed=seed,
                    compile=compile, resume=resume, overwrite=overwrite, workers=workers, shift=shift, moves=moves,
                    init=init, zoom_scale=zoom_scale)
    # auto: fp32 on a CPU (ochre.device.train_precision: bf16's slower compile costs more steps than it gains)
    run.precision = train_precision(info.device, precision, cpu_bf16=False)
    last = train_loop(run, tcfg, ckpt_every=ckpt_every, log_every=log_every, keep=keep, progress=progress)
    if info.world > 1:
        check_ranks_agree(run.model)
    teardown()
    summary = {"step": run.step, "elapsed_s": round(run.budget.elapsed, 1), "recipe": recipe_name, **last}
    if info.is_main:
        print(json.dumps(summary), file=sys.stderr)
    return summary


def _gather_rng(info) -> dict | list[dict]:
    """Every rank's RNG state (each draws its own noise), gathered on rank 0."""
    state = ckpt.capture_rng_state()
    if info.world == 1:
        return state
    states = [None] * info.world
    torch.distributed.all_gather_object(states, state)
    return states


def run(args) -> int:
    overrides = {k: v for k, v in (("steps", args.steps), ("batch", args.batch), ("lr", args.lr),
                                   ("window", args.window), ("unroll", args.unroll), ("minutes", args.minutes),
                                   ("soft_targets", args.soft_targets), ("soft_neighbours", args.soft_neighbours),
                                   ("unroll_feed", args.unroll_feed))
                 if v is not None}
    try:
        cfg, tcfg, sampling = recipe(args.recipe, args.preset, **overrides)
        cfg.impl = args.impl
        if args.pointer:
            cfg = replace(cfg, pointer=args.pointer)
        summary = train(args.tokens, args.out, cfg, tcfg, sampling, recipe_name=args.recipe, preset=args.preset,
                        seed=args.seed, compile=args.compile, resume=args.resume, overwrite=args.overwrite,
                        workers=args.workers, device=args.device, ckpt_every=args.ckpt_every,
                        log_every=args.log_every, keep=args.keep, shift=args.shift_per_unit,
                        precision=args.precision, init=args.init, zoom_scale=args.walk_zoom_scale)
    except (FileNotFoundError, ValueError, CheckpointError) as e:   # RunMismatch is a ValueError
        print(f"ochre train: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"ochre train: {e}", file=sys.stderr)
        return 3
    print(f"trained {summary['step']} steps ({summary['elapsed_s']:.0f} s) -> {args.out}")
    return 0


__all__ = ["WorldTrainConfig", "WorldLoss", "recipe", "train", "run", "unroll_at", "RECIPES"]
