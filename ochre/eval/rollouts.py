"""Rollouts on recorded actions (docs/metrics.md#rollouts-on-recorded-actions): held-out
trajectories, where the rollouts start, the rollouts of any dreamer (ochre.eval.dreamers), and the
metrics with their bootstrap intervals.

Legend: N short rollouts, L long rollouts, S steps, h w token grid, H W pixels.

A split's clip samples are stitched back into whole trajectories (consecutive segments share one
frame). Short rollouts (1 context frame + 32 steps) start every `spacing` frames, spread evenly over
every trajectory; long ones (256 steps) start at evenly spread frames too, their actions cycling
through the trajectory's when it ends first. Every short rollout also replays the first 16 actions of
another trajectory's rollout (delta_psnr@16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ochre.data.check import phase_shift
from ochre.data.loader import WindowDataset, load_npy
from ochre.data.video import decode_frames
from ochre.eval.intervals import interval, mean_interval, put

SHORT, OTHER, LONG = 32, 16, 256    # rollout lengths in steps
LONG_FROM = 129                     # the long-horizon metrics read steps LONG_FROM..LONG
HORIZONS = (1, 8, 32)
PSNR_CAP = 60.0
# rollout_metrics' entries that are not metrics: the mean PSNR curve, and per-rollout values (seeds
# averaged) that paired comparisons of two dreamers on the same rollouts resample together.
PRIVATE = ("curve", "per_rollout")


@dataclass
class Trajectory:
    source: str
    key: str                 # the first clip sample's key
    frames: np.ndarray       # (F, H, W, 3) uint8
    actions: np.ndarray      # (F−1, 4) float32


def trajectories(clips_root, split: str) -> list[Trajectory]:
    """The trajectories of a split (ochre.data.loader.split_sources), whole, in a stable order."""
    parts: dict[str, list] = {}
    for sample in WindowDataset(clips_root, window=2, split=split, shuffle=False).samples():
        meta = sample["meta"]
        parts.setdefault(meta["source"], []).append((meta.get("segment", 0), sample))
    out = []
    for source in sorted(parts):
        segs = [s for _, s in sorted(parts[source], key=lambda p: p[0])]
        frames = [decode_frames(s["mp4"]) for s in segs]
        frames = np.concatenate([frames[0]] + [f[1:] for f in frames[1:]])   # shared boundary frames
        actions = np.concatenate([load_npy(s["actions.npy"]) for s in segs]).astype(np.float32)
        out.append(Trajectory(source, segs[0]["__key__"], frames, actions))
    if not out:
        raise ValueError(f"{clips_root}: split {split!r} holds no trajectory (docs/metrics.md#splits: with fewer "
                         "than 3 recordings val is empty)")
    return out


# ---- where rollouts start -----------------------------------------------------------------------

@dataclass
class Plan:
    short: list[tuple[int, int]]                    # (trajectory, start) of each short rollout
    other: list[int]                                # the short rollout whose actions each one replays
    long: list[tuple[int, int]] = field(default_factory=list)


def _spread(candidates: list[int], n: int) -> list[int]:
    """n of the candidates, evenly spread (all of them when n >= their number)."""
    if n >= len(candidates):
        return list(candidates)
    return [candidates[int(i)] for i in np.linspace(0, len(candidates) - 1, n).round()]


def make_plan(trajs: list[Trajectory], rollouts: int, long_rollouts: int, spacing: int = 8) -> Plan:
    """Short starts every `spacing` frames, as many per trajectory as `rollouts` asks for and each
    trajectory allows; long starts spread over every trajectory, `long_rollouts` in all."""
    per = math.ceil(rollouts / len(trajs))
    short = [(i, s) for i, t in enumerate(trajs) for s in _spread(list(range(0, len(t.frames) - SHORT, spacing)), per)]
    if not short:
        raise ValueError(f"no held-out trajectory has the {SHORT + 1} frames a rollout needs")
    short = _spread(sorted(short, key=lambda p: (p[1], p[0])), rollouts)         # round robin over trajectories
    short.sort()
    per_long = math.ceil(long_rollouts / len(trajs))
    long = [(i, s) for i, t in enumerate(trajs) for s in _spread(list(range(0, len(t.frames) - 1, spacing)), per_long)]
    long = sorted(_spread(sorted(long, key=lambda p: (p[1], p[0])), long_rollouts)) if long_rollouts else []
    return Plan(short, _other(short), long)


def _other(short: list[tuple[int, int]]) -> list[int]:
    """For each rollout, another whose actions it replays: the nearest one (cyclically) from another
    trajectory, else the farthest start in the same one."""
    out = []
    for i, (traj, start) in enumerate(short):
        others = [j for j in range(1, len(short)) if short[(i + j) % len(short)][0] != traj]
        if others:
            out.append((i + others[0]) % len(short))
        else:
            out.append(max(range(len(short)), key=lambda j: abs(short[j][1] - start)))
    return out


def long_actions(t: Trajectory, start: int) -> np.ndarray:
    """LONG steps of actions from `start`, cycling through the trajectory's when it ends first."""
    seq = np.concatenate([t.actions[start:], t.actions[:start]])
    return np.concatenate([seq] * math.ceil(LONG / len(seq)))[:LONG]


# ---- the rollouts of one dreamer ----------------------------------------------------------------

@dataclass
class Rollouts:
    """What one dreamer did on a plan: per noise seed, the short dreams, their codes, the replays of
    other actions, and the long dreams' frames LONG_FROM..LONG and codes."""
    real: np.ndarray                       # (N, SHORT+1, H, W, 3) uint8
    actions: np.ndarray                    # (N, SHORT, 4)
    other_actions: np.ndarray              # (N, OTHER, 4)
    dream: list[np.ndarray]                # per seed (N, SHORT+1, H, W, 3)
    codes: list[np.ndarray]                # per seed (N, SHORT+1, h, w)
    dream_other: list[np.ndarray]          # per seed (N, OTHER+1, H, W, 3), or only step OTHER (N, 1, H, W, 3)
    long_frames: list[np.ndarray]          # per long seed (L, LONG−LONG_FROM+1, H, W, 3)
    long_codes: list[np.ndarray]           # per long seed (L, LONG+1, h, w)


def real_frames(trajs: list[Trajectory], plan: Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real short rollouts: frames (N, SHORT+1, H, W, 3), actions (N, SHORT, 4), other actions (N, OTHER, 4)."""
    real = np.stack([trajs[i].frames[s:s + SHORT + 1] for i, s in plan.short])
    actions = np.stack([trajs[i].actions[s:s + SHORT] for i, s in plan.short])
    return real, actions, actions[plan.other, :OTHER]


def roll(dreamer, trajs: list[Trajectory], plan: Plan, seeds, long_seeds: int = 1, other: bool = True,
         other_frames: bool = False) -> Rollouts:
    """Every rollout of the plan with `dreamer`, for each seed (long ones for the first `long_seeds`).
    The replays of other actions decode only their step OTHER, which delta_psnr@16 reads; with
    `other_frames` the first seed's replays decode every frame (what rollouts.npz keeps)."""
    real, actions, other_actions = real_frames(trajs, plan)
    out = Rollouts(real, actions, other_actions, [], [], [], [], [])
    for i, seed in enumerate(seeds):
        frames, codes = dreamer.dream(real[:, 0], actions, real, seed=seed)
        out.dream.append(frames)
        out.codes.append(codes)
        if other:
            keep = None if other_frames and i == 0 else slice(OTHER, OTHER + 1)
            out.dream_other.append(dreamer.dream(real[:, 0], other_actions, None, seed=seed, keep=keep)[0])
    if plan.long:
        context = np.stack([trajs[i].frames[s] for i, s in plan.long])
        acts = np.stack([long_actions(trajs[i], s) for i, s in plan.long])
        for seed in list(seeds)[:long_seeds]:
            frames, codes = dreamer.dream(context, acts, None, seed=seed, keep=slice(LONG_FROM, LONG + 1))
            out.long_frames.append(frames)
            out.long_codes.append(codes)
    return out


# ---- the metrics ------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR per frame of uint8 (..., H, W, 3) pairs, capped at 60 dB: (...)."""
    mse = np.square(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(-3, -2, -1))
    return np.minimum(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), PSNR_CAP)


def grad_magnitude(frames: np.ndarray) -> np.ndarray:
    """Mean |∂x| + |∂y| of the grey image per frame: uint8 (..., H, W, 3) -> (...)."""
    g = frames.astype(np.float64).mean(axis=-1)
    return np.abs(np.diff(g, axis=-1)).mean(axis=(-2, -1)) + np.abs(np.diff(g, axis=-2)).mean(axis=(-2, -1))


def dx(frames: np.ndarray) -> np.ndarray:
    """Horizontal image shift between consecutive frames: (N, T, H, W, 3) -> (N, T−1)."""
    return np.stack([phase_shift(f)[:, 1] for f in frames])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")


def yaw_response(frames: np.ndarray, actions: np.ndarray) -> float:
    """Pearson correlation of commanded yaw and −dx over all (rollout, step) pairs:
    frames (N, S+1, H, W, 3), actions (N, S, 4)."""
    return _corr(actions[..., 0], -dx(frames))


def _presence(codes: np.ndarray, k: int) -> np.ndarray:
    """Which codes occur, per rollout: codes (N, ...) -> bool (N, k)."""
    out = np.zeros((len(codes), k), bool)
    for i, c in enumerate(codes):
        out[i, np.unique(c)] = True
    return out


@dataclass
class LongTruth:
    """What the long rollouts of every dreamer on a plan are compared with, made once: the codes the
    real trajectories' first LONG+1 frames use, and those frames' mean gradient magnitude."""
    presence: np.ndarray                   # (L, K) bool: which codes occur in each
    grad: np.ndarray                       # (L,)


def long_truth(trajs: list[Trajectory], plan: Plan, real_codes, codebook: int) -> LongTruth | None:
    """The LongTruth of a plan (None without long rollouts). real_codes(frames uint8 (..., H, W, 3)) ->
    codes: the tokenizer's."""
    if not plan.long:
        return None
    real_long = [trajs[i].frames[:LONG + 1] for i, _ in plan.long]
    return LongTruth(_presence([real_codes(f) for f in real_long], codebook),
                     np.array([grad_magnitude(f).mean() for f in real_long]))


def rollout_metrics(r: Rollouts, truth: LongTruth | None, codebook: int) -> dict:
    """The rollout metrics of one dreamer, each the mean over its seeds with a bootstrap interval over
    rollouts (code_usage has none). truth: long_truth() of the plan, when it has long rollouts."""
    m: dict = {}
    per_step = np.stack([psnr(d, r.real) for d in r.dream])                         # (seeds, N, S+1)
    for h in HORIZONS:
        put(m, f"psnr@{h}", mean_interval(per_step[:, :, h]))
    if r.dream_other:
        other = np.stack([psnr(d[:, -1], r.real[:, OTHER]) for d in r.dream_other])      # (seeds, N)
        put(m, "delta_psnr@16", mean_interval(per_step[:, :, OTHER] - other))
    shifts = np.stack([dx(d[:, :OTHER + 1]) for d in r.dream])                       # (seeds, N, OTHER)
    yaw = r.actions[:, :OTHER, 0]
    put(m, "yaw_response", interval(lambda idx: np.nanmean([_corr(yaw[idx], -s[idx]) for s in shifts]), len(yaw)))
    if r.long_codes:
        dreamt = [_presence(c[:, 1:], codebook) for c in r.long_codes]
        # No interval: a count of distinct codes over a set of rollouts only shrinks when the rollouts
        # are resampled (a repeated rollout adds no code), so a bootstrap over them is biased low.
        m["code_usage@256"] = float(np.mean([d.any(0).sum() for d in dreamt]) / max(truth.presence.any(0).sum(), 1))
        g_real = truth.grad                                                           # (L,)
        g_dream = np.stack([grad_magnitude(f).mean(axis=1) for f in r.long_frames])  # (long seeds, L)
        put(m, "grad_ratio@256", interval(lambda idx: g_dream[:, idx].mean() / g_real[idx].mean(), len(g_real)))
    m["curve"] = per_step.mean(axis=(0, 1))                                        # (S+1,)
    m["per_rollout"] = {f"psnr@{h}": per_step[:, :, h].mean(axis=0) for h in HORIZONS}   # (N,) each
    return m


def public(metrics: dict) -> dict:
    """The metrics of rollout_metrics' output, without its PRIVATE entries."""
    return {k: v for k, v in metrics.items() if k not in PRIVATE}


def over_repeat(model: dict, repeat: dict) -> dict:
    """psnr@h/over_repeat: the dream's PSNR minus the repeated frame's on the same rollouts, with a
    paired bootstrap interval (both resampled with the same rollouts, so the shared difficulty of a
    rollout cancels and the interval is the difference's, not the sum of two intervals)."""
    m: dict = {}
    for name, ours in model["per_rollout"].items():
        put(m, f"{name}/over_repeat", mean_interval(ours - repeat["per_rollout"][name]))
    return m


def real_yaw_response(r: Rollouts) -> tuple[float, list[float]]:
    """yaw_response of the real frames: the ceiling the data allows."""
    s, yaw = dx(r.real[:, :OTHER + 1]), r.actions[:, :OTHER, 0]
    return interval(lambda idx: _corr(yaw[idx], -s[idx]), len(yaw))
