"""A probe of a draw whose neighbouring codes condition on each other: MaskGIT-style rounds, trained for it.

    python -m ochre.bench.mask_rounds train RUN TOKENS --out DIR [--minutes M] [--batch B]
    python -m ochre.bench.mask_rounds eval RUN TOKENS DIR|none --out EVAL [--rounds R]
                                           [--order confidence|random|copies|unseen] [--pairs-only]

The world model RUN stays frozen. A small refiner learns, from the model's last-layer state x (B, C, h, w),
the copy prior's proposals and a partly revealed next grid (the true next codes at a random share of
positions, a mask code at the rest), a correction dx to the state and dg to the copy gate: the step's
distribution at a hidden position becomes the model's own mixture (ochre.models.dynamics.Mixture) of
head(x + dx) and gate + dg, so the copy prior, the proposals and the decoding's boosts stay as they are.
Its last convolution starts at zero: untrained, every round is the model's own draw. Trained on
teacher-forced windows of the train split (inputs with the world model's own token noise; `--unroll U`:
the last U inputs of a window are the model's own codes drawn in rounds), NLL at the hidden positions,
the hidden share cos(pi/2 * U(0, 1)) per grid (MaskGIT's schedule).

A dream step then draws in R rounds: each round draws every position not yet fixed from the refined
mixture given the ones fixed so far, and fixes the most confident of them (the drawn code's
log-probability; `--order random`: a random order) until 1 − cos(pi/2 * r / R) of the grid is fixed
after round r; the last round fixes the rest. `--order copies`: the first round fixes the positions that
drew the copy prior's proposal (`--order unseen`: those in no adjacent pair the train split's grids never
show), the later rounds draw the rest in a random order given them. Round r's
noise is frac(u + r * 0.618...) of the step's one noise draw u, so the noise rule is the live step's.
The state follows the world model alone (the refiner changes the codes drawn, not the recurrence).
Eval only: the live step does not do this.

`eval` writes the §6 metrics of `ochre eval` (100 rollouts x 2 seeds, 48 of 256 steps; no tours, learned
twin or action model) to EVAL/metrics.json, and to EVAL/code_pairs.json the share of adjacent code pairs
never seen in training (bench/code_pairs) and the share that are one code twice (flat regions), on the
same short rollouts. bench/results/mask_rounds_probe_cpu_2026-12-05.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ochre.eval.dreamers import ModelDreamer
from ochre.models.dynamics import Mixture, _mix
from ochre.models.sampling import sample_mixture

GOLDEN = 0.6180339887498949      # round r's noise: frac(u + r · GOLDEN), uniform whenever u is


@dataclass
class RefinerConfig:
    codebook_size: int            # K; code K is "hidden"
    channels: int                 # C of the world model's last layer
    embed_dim: int = 32
    width: int = 64
    layers: int = 3               # 3x3 convolutions: a 7x7 neighbourhood at 3


class Refiner(nn.Module):
    """(x (B, C, h, w), revealed codes (B, h, w) with K where hidden, the copy prior's proposals (B, h, w))
    -> dx (B, C, h, w), dg (B, h, w). One embedding table for both codes (K: hidden)."""

    kind = "refiner"

    def __init__(self, cfg: RefinerConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.codebook_size + 1, cfg.embed_dim)
        c_in = [cfg.channels + 2 * cfg.embed_dim] + [cfg.width] * (cfg.layers - 1)
        c_out = [cfg.width] * (cfg.layers - 1) + [cfg.channels + 1]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, padding=1) for i, o in zip(c_in, c_out))
        nn.init.zeros_(self.convs[-1].weight)       # untrained: the world model's own distribution
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor, revealed: torch.Tensor, proposals: torch.Tensor):
        codes = self.embed(torch.cat([revealed, proposals], dim=-1))                   # (B, h, 2w, E)
        y = torch.cat([x, *(c.permute(0, 3, 1, 2).to(x.dtype) for c in codes.chunk(2, dim=2))], dim=1)
        for conv in self.convs[:-1]:
            y = F.silu(conv(y))
        y = self.convs[-1](y)
        return y[:, :-1], y[:, -1]


def _single_proposal(loaded, run):
    """load_dynamics's result, refused for a model with a learned pointer: the refiner reads one proposal
    per position."""
    if loaded[0].config.pointer:
        raise ValueError(f"{run}: a model with a learned pointer (pointer {loaded[0].config.pointer}); the mask "
                         "rounds' refiner reads one copy proposal per position")
    return loaded


def refined(model, refiner: Refiner, x: torch.Tensor, mixture: Mixture, revealed: torch.Tensor) -> Mixture:
    """The step's mixture given the revealed codes: head(x + dx), gate + dg, the same proposals and boosts."""
    dx, dg = refiner(x, revealed, mixture.codes)
    return Mixture(model.head_logits(x + dx), mixture.codes, mixture.gate + dg.float(), mixture.extra)


def hidden_share(n: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """MaskGIT's schedule: per grid a hidden share cos(pi/2 · U(0, 1)) (n,)."""
    return torch.cos(math.pi / 2 * torch.rand(n, generator=gen))


def fixed_after(r: int, rounds: int, n: int) -> int:
    """Positions of n fixed after round r (1-based) of `rounds`: round(n · (1 − cos(pi/2 · r / rounds))), at
    least one more each round, all after the last."""
    if r >= rounds:
        return n
    return min(n, max(r, round(n * (1 - math.cos(math.pi / 2 * r / rounds)))))


def draw_rounds(model, refiner: Refiner, x: torch.Tensor, mixture: Mixture, u: torch.Tensor, sampling,
                rounds: int, order: torch.Tensor | None = None, first=None) -> torch.Tensor:
    """One step's codes (B, h, w) in `rounds` rounds (module docstring). x: the last layer's new state,
    mixture: the step's (with its boosts), u (B, h, w) the step's noise, order (B, h, w) a random
    priority in [0, 1) (None: confidence). first (needs order): which of the first round's draws
    (B, h, w) to fix, as a bool (B, h, w); the later rounds draw the rest in the random order (round r
    of the R − 1 after the first fixes those with priority below 1 − cos(pi/2 · r / (R − 1)))."""
    if first is not None and order is None:
        raise ValueError("after the first round the rest are drawn in a random order: pass `order`")
    B, h, w = u.shape
    K = refiner.config.codebook_size
    revealed = torch.full((B, h, w), K, dtype=torch.long, device=u.device)
    fixed = torch.zeros(B, h * w, dtype=torch.bool, device=u.device)
    for r in range(rounds):
        mix = refined(model, refiner, x, mixture, revealed)
        confidence = order is None and r < rounds - 1          # the log-probabilities only where they rank
        drawn, lp = sample_mixture(mix, torch.remainder(u + r * GOLDEN, 1.0), sampling, logits=confidence)
        if r == rounds - 1:
            return torch.where(fixed.view(B, h, w), revealed, drawn)
        if first is not None:
            share = 1 - math.cos(math.pi / 2 * r / (rounds - 1))
            keep = fixed | (first(drawn) if r == 0 else (order < share)).reshape(B, -1)
        else:
            score = (lp.gather(-1, drawn[..., None])[..., 0] if order is None else order).reshape(B, -1).float()
            score = torch.where(fixed, torch.inf, score)              # the fixed stay fixed
            keep = torch.zeros_like(fixed).scatter(1, score.topk(fixed_after(r + 1, rounds, h * w), 1).indices, True)
        revealed = torch.where((keep & ~fixed).view(B, h, w), drawn, revealed)
        fixed = keep
    return revealed


def touches_unseen(codes: torch.Tensor, table: tuple[torch.Tensor, torch.Tensor], k: int) -> torch.Tensor:
    """Whether each position (B, h, w) of codes (B, h, w) is in an adjacent pair the table (bench/code_pairs'
    (k*k,) bool tables, left-right and top-bottom) never saw."""
    seen_h, seen_v = table
    bad_h = ~seen_h[codes[:, :, :-1] * k + codes[:, :, 1:]]                            # (B, h, w-1)
    bad_v = ~seen_v[codes[:, :-1, :] * k + codes[:, 1:, :]]                            # (B, h-1, w)
    out = torch.zeros_like(codes, dtype=torch.bool)
    out[:, :, :-1] |= bad_h
    out[:, :, 1:] |= bad_h
    out[:, :-1, :] |= bad_v
    out[:, 1:, :] |= bad_v
    return out


def rounds_dreamer(refiner: Refiner, rounds: int, order: str, table=None):
    """A ModelDreamer class whose every step is drawn in rounds (CPU). order "unseen" needs the pair
    table (bench/code_pairs.pair_table)."""
    if order == "unseen":
        if table is None:
            raise ValueError("--order unseen needs the train split's pair table")
        table = tuple(torch.from_numpy(t) for t in table)

    class RoundsDreamer(ModelDreamer):
        def _batch(self, context, actions, seed, keep):
            self.order_gen = torch.Generator().manual_seed(2000 + seed)     # per rollout batch, like the noise
            return super()._batch(context, actions, seed, keep)

        def draw(self, tokens, actions, noise, state):
            mixture, state = self.model.step(tokens, actions, state, boost=self.sampling.boosts, parts=True)
            x = state[len(self.model.config.hidden) - 1]
            prio = torch.rand(noise.shape, generator=self.order_gen) if order != "confidence" else None
            first = {"copies": lambda d: d == mixture.codes,
                     "unseen": lambda d: ~touches_unseen(d, table, refiner.config.codebook_size)}.get(order)
            return draw_rounds(self.model, refiner, x, mixture, noise, self.sampling, rounds, prio, first), state

    return RoundsDreamer


def world_steps(model, tokens: torch.Tensor, actions: torch.Tensor, token_noise: float, unroll: int = 0,
                refiner: Refiner | None = None, sampling=None, rounds: int = 4):
    """The frozen world model over windows: tokens (B, T, h, w), actions (B, T−1, 4) -> x (N, C, h, w),
    the mixtures' proposals and gates (N, h, w) and the targets (N, h, w), N = B·(T−1). The last `unroll`
    steps take the model's own codes as input, drawn in `rounds` rounds in a random order with the
    refiner as it is and the decoding `sampling` (its boosts): the states and proposals a dream shows
    the refiner, not only those of recorded play; the targets stay the recorded codes."""
    B, T = tokens.shape[:2]
    inputs = tokens[:, :-1]
    if token_noise:
        rate = torch.rand(B, 1, 1, 1) * token_noise
        inputs = torch.where(torch.rand(inputs.shape) < rate, torch.randint_like(inputs, model.config.codebook_size),
                             inputs)
    act = model.with_flag(actions)
    state = model.init_state(B)
    xs, codes, gates, current = [], [], [], None
    first_own = T - 1 - unroll
    with torch.no_grad():
        for t in range(T - 1):
            own = t >= first_own
            x_in = current if own else inputs[:, t]
            mixture, state = model.core(model.input_gates(x_in, act[:, t]), x_in, act[:, t],
                                        state if own else model.realign(state),
                                        boost=sampling.boosts if sampling is not None else (0.0, 0.0), parts=True)
            x = state[len(model.config.hidden) - 1]
            xs.append(x)
            codes.append(mixture.codes)
            gates.append(mixture.gate)
            if t + 1 >= first_own and t + 1 < T - 1:
                current = draw_rounds(model, refiner, x, mixture, torch.rand(x_in.shape), sampling, rounds,
                                      torch.rand(x_in.shape))
    flat = lambda v: torch.stack(v, dim=1).flatten(0, 1)                              # noqa: E731
    return flat(xs), flat(codes), flat(gates), tokens[:, 1:].flatten(0, 1)


def refiner_loss(model, refiner: Refiner, x, codes, gates, target, gen=None, untrained: bool = True):
    """NLL at the hidden positions of a random share of each grid (MaskGIT's schedule) -> (loss, at-0 loss):
    the second the same positions under the untrained refiner (the world model's own mixture), or None
    without `untrained` (a second pass through the K-way head, for the log only)."""
    N = len(target)
    hide = torch.rand(target.shape, generator=gen) < hidden_share(N, gen)[:, None, None]      # (N, h, w)
    revealed = torch.where(hide, refiner.config.codebook_size, target)
    mix = refined(model, refiner, x, Mixture(None, codes, gates, None), revealed)
    lp = _mix(mix.z, codes, mix.gate, None)                                         # (N, h, w, K)
    nll = -lp.gather(-1, target[..., None])[..., 0]
    n = hide.sum().clamp(min=1)
    if not untrained:
        return (nll * hide).sum() / n, None
    with torch.no_grad():
        base = -_mix(model.head_logits(x), codes, gates, None).gather(-1, target[..., None])[..., 0]
    return (nll * hide).sum() / n, (base * hide).sum() / n


def train(run, tokens, out, minutes: float, batch: int, lr: float, seed: int = 0, log_every: int = 20,
          window: int = 12, unroll: int = 0, init=None) -> dict:
    """Train a refiner for the frozen world model `run` on `tokens`' train split for `minutes` (resumable):
    windows of `window` frames whose last `unroll` inputs are the model's own draws (world_steps), from
    the weights of the refiner `init` if given."""
    from tqdm import tqdm

    from ochre.data.loader import window_batches
    from ochre.models.checkpoint import latest_checkpoint, load_dynamics
    from ochre.train.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
    from ochre.train.common import RunLogger, cosine_lr

    model, sampling, _ = _single_proposal(load_dynamics(run), run)
    model.requires_grad_(False).eval()
    refiner = Refiner(RefinerConfig(model.config.codebook_size, model.config.hidden[-1]))
    opt = torch.optim.AdamW(refiner.parameters(), lr=lr, weight_decay=0.01)
    torch.manual_seed(seed)
    step, elapsed, epoch, skip = 0, 0.0, 0, 0
    latest = latest_checkpoint(out)
    if latest is None and init is not None:
        refiner.load_state_dict(load_refiner(init).state_dict())
    if latest is not None:
        done = load_checkpoint(latest, refiner, opt)["extra"]
        step, elapsed, epoch, skip = done["step"], done["elapsed_s"], done["epoch"], done["batch_in_epoch"]
        restore_rng_state(done["rng"])
    batches = window_batches(tokens, window, batch, seed=seed, start_epoch=epoch, skip=skip)
    Path(out).mkdir(parents=True, exist_ok=True)
    logger = RunLogger(Path(out), True)
    budget = minutes * 60
    bar = tqdm(total=100, initial=round(100 * min(elapsed / budget, 1), 1), desc="refiner", unit="%",
               bar_format="{l_bar}{bar}| {n:.0f}/100% [{elapsed}<{remaining}{postfix}]", file=sys.stderr)
    last, t0 = {}, time.perf_counter() - elapsed
    while elapsed < budget:
        epoch, n, b = next(batches)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(elapsed / budget, lr, 0.02)
        x, codes, gates, target = world_steps(model, b["tokens"], b["actions"], 0.1, unroll, refiner, sampling)
        logs = (step + 1) % log_every == 0
        loss, base = refiner_loss(model, refiner, x, codes, gates, target, untrained=logs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(refiner.parameters(), 1.0)
        opt.step()
        step += 1
        elapsed = time.perf_counter() - t0
        bar.update(round(100 * min(elapsed / budget, 1), 1) - bar.n)
        done = elapsed >= budget
        if logs or done:
            last = {"loss": float(loss.detach()), "elapsed_s": elapsed}
            if base is not None:
                last["loss_untrained"] = float(base)
            logger.log(step, last)
            bar.set_postfix(step=step, loss=f"{last['loss']:.3f}")
        if step % 200 == 0 or done:
            save_checkpoint(out, step, refiner, opt, extra={
                "step": step, "elapsed_s": elapsed, "epoch": epoch, "batch_in_epoch": n + 1,
                "rng": capture_rng_state(), "world": Path(run).name, "minutes": minutes, "batch": batch,
                "lr": lr, "window": window, "unroll": unroll, "init": None if init is None else Path(init).name})
    bar.close()
    return last


def load_refiner(path) -> Refiner:
    from ochre.models.checkpoint import read_checkpoint_config
    from ochre.train.checkpoint import load_checkpoint

    refiner = Refiner(RefinerConfig(**read_checkpoint_config(path)["config"]))
    load_checkpoint(path, refiner)
    return refiner.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a refiner for a frozen world model")
    t.add_argument("run", help="world-model run or checkpoint folder (frozen)")
    t.add_argument("tokens", help="its token shards (train split)")
    t.add_argument("--out", required=True, help="refiner run folder (resumes if it holds a checkpoint)")
    t.add_argument("--minutes", type=float, default=30.0, help="training wall time (default 30)")
    t.add_argument("--batch", type=int, default=8, help="windows a step (default 8)")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--window", type=int, default=12, help="frames a window (default 12)")
    t.add_argument("--unroll", type=int, default=0,
                   help="last inputs of a window that are the model's own draws in rounds (default 0: recorded play)")
    t.add_argument("--init", default=None, help="start from this refiner's weights (a new run only)")
    e = sub.add_parser("eval", help="§6 metrics of the world model's dreams drawn in rounds")
    e.add_argument("run", help="world-model run or checkpoint folder")
    e.add_argument("tokens", help="its token shards")
    e.add_argument("refiner", help="refiner run or checkpoint folder (`train`), or `none`: untrained, so with "
                                   "--rounds 1 the world model's own draw (the baseline on the same rollouts)")
    e.add_argument("--out", required=True, help="eval output folder")
    e.add_argument("--rounds", type=int, default=4, help="rounds a step (default 4)")
    e.add_argument("--order", choices=("confidence", "random", "copies", "unseen"), default="confidence",
                   help="which drawn codes a round fixes: the most confident, a random share; or after the first "
                        "round the copied ones (copies) or those in no pair training never saw (unseen), and the "
                        "rest in a random order")
    e.add_argument("--split", default="val")
    e.add_argument("--pairs-only", action="store_true", help="only the unseen-pair share (no §6 metrics)")
    args = ap.parse_args(argv)

    from ochre.device import keep_large_blocks

    keep_large_blocks()
    if args.command == "train":
        if not 0 <= args.unroll <= args.window - 2:
            ap.error("--unroll must be between 0 and --window - 2")
        print(train(args.run, args.tokens, args.out, args.minutes, args.batch, args.lr, window=args.window,
                    unroll=args.unroll, init=args.init))
        return 0
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    from ochre.bench import code_pairs as cp
    from ochre.data.shards import indexed_folder, read_index
    from ochre.eval import EvalConfig
    from ochre.eval.dreamers import Codec
    from ochre.eval.evaluate import evaluate
    from ochre.io import write_json_atomic
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    model, sampling, _ = _single_proposal(load_dynamics(args.run), args.run)
    if args.refiner == "none":              # the baseline: the world model's own draw, on the same rollouts
        refiner = Refiner(RefinerConfig(model.config.codebook_size, model.config.hidden[-1])).eval()
    else:
        refiner = load_refiner(args.refiner)
    index = read_index(args.tokens)
    k = int(index["codebook_size"])
    table = cp.pair_table(cp.train_grids(args.tokens), k)
    cls = rounds_dreamer(refiner, args.rounds, args.order, table)
    seeds = (0, 1)
    if not args.pairs_only:
        cfg = EvalConfig(split=args.split, rollouts=100, long_rollouts=48, seeds=seeds, learned=False, tours=0,
                         idm=False)
        m = evaluate(args.run, args.tokens, args.out, cfg=cfg, device="cpu", dreamer_class=cls)
        for key in ("psnr@8/over_repeat", "psnr@32/over_repeat", "c2st@9-32", "c2st@129-256", "grad_ratio@256"):
            print(key, round(m[key], 3), [round(v, 3) for v in m.get(key + "/ci", [])])
    # The unseen-pair share of the same short rollouts and noise (bench/code_pairs), and the share of adjacent
    # pairs that are one code twice (flat regions), with the real codes' for reference.
    real, actions = cp.short_rollouts(args.tokens, args.split, 100)
    codec = Codec(load_tokenizer(indexed_folder(args.tokens, "tokenizer_checkpoint", index)))
    dreamt = cp.dream_codes(cls("rounds", model, codec, sampling), real, actions, seeds)
    truth = cp.real_codes(codec, real)
    found = {"unseen_pairs": cp.summary(np.mean([cp.unseen_share(c, table, k) for c in dreamt], axis=0)),
             "same_pairs": cp.summary(np.mean([cp.same_share(c) for c in dreamt], axis=0)),
             "real_same_pairs": cp.summary(cp.same_share(truth))}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(args.out) / "code_pairs.json", {"rounds": args.rounds, "order": args.order,
                                                           "rollouts": len(real), "seeds": list(seeds), **found})
    for name, row in found.items():
        print(name, {t: row.get(f"@{t}") for t in (1, 8, 16, 32)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
