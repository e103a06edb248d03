"""`ochre eval`: the docs/metrics.md metrics of a dynamics checkpoint on held-out trajectories.

Legend: N rollouts, S steps, h w token grid, H W pixels.

Held-out trajectories follow the loader's rule (ochre.data.loader.val_sources); their clip
samples are stitched back into whole trajectories (consecutive segments share one frame).
Short rollouts (1 context frame + 32 steps) start at evenly spread frames of every held-out
trajectory; long ones (256 steps) start at each trajectory's first frame. The context frame is
encoded by the tokenizer; the model then runs on the recorded actions with the decoding its
checkpoint ships (sampling noise from a fixed seed), and every frame is decoded to uint8 RGB.
Baselines: `repeat_frame/` repeats the real context frame; `--compare CKPT` adds a second
model under its recipe name (e.g. `seed-v3/`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ochre.data.check import phase_shift
from ochre.data.loader import WindowDataset, load_npy, read_index
from ochre.data.shards import indexed_folder
from ochre.data.video import decode_frames
from ochre.io import atomic_path, write_json_atomic
from ochre.models.precision import in_dtype
from ochre.models.sampling import SamplingConfig
from ochre.models.step import draw_noise, live_step, noise_generator

SHORT, OTHER, LONG = 32, 16, 256    # rollout lengths in steps (§6)
HORIZONS = (1, 8, 32)
PSNR_CAP = 60.0


@dataclass
class Trajectory:
    source: str
    key: str                 # the first clip sample's key
    frames: np.ndarray       # (F, H, W, 3) uint8
    actions: np.ndarray      # (F−1, 4) float32


def heldout_trajectories(clips_root) -> list[Trajectory]:
    """Held-out clip samples stitched into whole trajectories, in a stable order."""
    parts: dict[str, list] = {}
    for sample in WindowDataset(clips_root, window=2, split="val", shuffle=False).samples():
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
        raise ValueError(f"{clips_root}: no held-out trajectory (the split needs at least 2 recordings)")
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR per frame of uint8 (..., H, W, 3) pairs, capped at 60 dB: (...)."""
    mse = np.square(a.astype(np.float64) - b.astype(np.float64)).mean(axis=(-3, -2, -1))
    return np.minimum(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-12)), PSNR_CAP)


def grad_magnitude(frames: np.ndarray) -> float:
    """Mean |∂x| + |∂y| of the grey image over uint8 (..., H, W, 3) frames."""
    g = frames.astype(np.float64).mean(axis=-1)
    return float(np.abs(np.diff(g, axis=-1)).mean() + np.abs(np.diff(g, axis=-2)).mean())


def yaw_response(frames: np.ndarray, actions: np.ndarray) -> float:
    """Pearson correlation of commanded yaw and −dx over all (rollout, step) pairs:
    frames (N, S+1, H, W, 3), actions (N, S, 4)."""
    dx = np.concatenate([phase_shift(f)[:, 1] for f in frames])                # (N·S,)
    yaw = actions[..., 0].reshape(-1)
    if yaw.std() == 0 or dx.std() == 0:
        return 0.0
    return float(np.corrcoef(yaw, -dx)[0, 1])


class Dreamer:
    """Tokenizer + dynamics model + decoding: context frames and actions in, dreamed frames out."""

    def __init__(self, model, tokenizer, sampling: SamplingConfig, seed: int = 0, batch: int = 64, decoder=None):
        """decoder: the tokenizer that decodes (default `tokenizer`), e.g. one converted to bf16 like the
        runtime's, while contexts are encoded at full precision as the runtime does."""
        self.model, self.tokenizer, self.sampling = model.eval(), tokenizer.eval(), sampling
        self.decoder = (decoder or tokenizer).eval()
        self.seed, self.batch = seed, batch
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> codes (N, h, w)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(self.device)
        return torch.cat([self.tokenizer.encode(x[i:i + 256]) for i in range(0, len(x), 256)])

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> np.ndarray:
        """codes (N, h, w) -> uint8 (N, H, W, 3)."""
        out = [self.decoder.decode(codes[i:i + 256], as_uint8=True) for i in range(0, len(codes), 256)]
        return torch.cat(out).permute(0, 2, 3, 1).cpu().numpy()

    @torch.no_grad()
    def rollout(self, context: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """context uint8 (N, H, W, 3), actions (N, S, 4) -> frames uint8 (N, S+1, H, W, 3) and codes
        (N, S+1, h, w); frame 0 is the decoded context."""
        frames, codes = [], []
        for i in range(0, len(context), self.batch):
            f, c = self._rollout(context[i:i + self.batch], actions[i:i + self.batch])
            frames.append(f)
            codes.append(c)
        return np.concatenate(frames), np.concatenate(codes)

    def _rollout(self, context, actions):
        """One batch, the way the runtime's torch backend plays it (ochre.runtime.stepper): the same
        live step, the same noise rule seeded with the eval seed, each step decoded as it is made."""
        gen = noise_generator(self.seed)          # the same noise for every model and baseline
        tokens = self.encode(context)                                              # (B, h, w)
        acts = torch.from_numpy(np.ascontiguousarray(actions, np.float32)).to(self.device)
        state = self.model.init_state(len(tokens), self.device)
        codes, frames = [tokens], [self.decode(tokens)]
        for t in range(acts.shape[1]):
            u = draw_noise(gen, len(tokens), tokens.shape[-1]).to(self.device)
            tokens, _, state = live_step(self.model, tokens, acts[:, t], u, state, self.sampling)
            codes.append(tokens)
            frames.append(self.decode(tokens))
        return np.stack(frames, axis=1), torch.stack(codes, dim=1).cpu().numpy()   # (B, S+1, H, W, 3), (B, S+1, h, w)


def _plan(trajs: list[Trajectory], max_rollouts: int) -> list[tuple[int, int]]:
    """(trajectory, start) of each short rollout: evenly spread over every held-out trajectory."""
    per = max(1, max_rollouts // len(trajs))
    plan = []
    for i, t in enumerate(trajs):
        last = len(t.frames) - 1 - SHORT
        if last < 0:
            continue
        n = min(per, last // (SHORT // 2) + 1)
        plan += [(i, int(s)) for s in np.linspace(0, last, n).round()]
    if not plan:
        raise ValueError(f"no held-out trajectory has the {SHORT + 1} frames a rollout needs")
    return plan[:max_rollouts]


def _other(plan: list[tuple[int, int]]) -> list[int]:
    """For each rollout, another rollout whose actions it replays for delta_psnr: the nearest one
    (cyclically) from another trajectory, else the farthest start in the same one."""
    out = []
    for i, (traj, start) in enumerate(plan):
        others = [j for j in range(1, len(plan)) if plan[(i + j) % len(plan)][0] != traj]
        if others:
            out.append((i + others[0]) % len(plan))
        else:
            out.append(max(range(len(plan)), key=lambda j: abs(plan[j][1] - start)))
    return out


def _long_actions(t: Trajectory) -> np.ndarray:
    """LONG steps of the trajectory's actions; a shorter trajectory's actions repeat from its start."""
    reps = -(-LONG // max(1, len(t.actions)))
    return np.concatenate([t.actions] * reps)[:LONG]


def evaluate_model(dreamer: Dreamer, trajs: list[Trajectory], plan, other) -> tuple[dict, dict]:
    """The §6 metrics of one model -> (metrics, arrays for rollouts.npz and the plots)."""
    real = np.stack([trajs[i].frames[s:s + SHORT + 1] for i, s in plan])           # (N, 33, H, W, 3)
    actions = np.stack([trajs[i].actions[s:s + SHORT] for i, s in plan])          # (N, 32, 4)
    dream, _ = dreamer.rollout(real[:, 0], actions)
    other_actions = actions[other, :OTHER]                                          # (N, 16, 4)
    dream_other, _ = dreamer.rollout(real[:, 0], other_actions)
    curve = psnr(dream, real).mean(axis=0)                                          # (33,)
    metrics = {f"psnr@{h}": float(curve[h]) for h in HORIZONS}
    metrics["delta_psnr@16"] = float(curve[OTHER] - psnr(dream_other[:, OTHER], real[:, OTHER]).mean())
    metrics["yaw_response"] = yaw_response(dream[:, :OTHER + 1], actions[:, :OTHER])
    long_dream, long_codes = dreamer.rollout(np.stack([t.frames[0] for t in trajs]),
                                             np.stack([_long_actions(t) for t in trajs]))
    real_all = np.concatenate([t.frames[:LONG + 1] for t in trajs])
    real_codes = dreamer.encode(real_all).cpu().numpy()
    metrics["code_usage@256"] = len(np.unique(long_codes[:, 1:])) / len(np.unique(real_codes))
    metrics["grad_ratio@256"] = grad_magnitude(long_dream[:, 129:]) / grad_magnitude(real_all)
    arrays = {"real": real, "dream": dream, "actions": actions.astype(np.float32),
              "dream_other": dream_other, "other_actions": other_actions.astype(np.float32),
              "curve": curve}
    return metrics, arrays


def repeat_frame_metrics(real: np.ndarray, trajs: list[Trajectory], dreamer: Dreamer) -> tuple[dict, np.ndarray]:
    """The repeat-the-context-frame predictor: real[:, 0] at every step."""
    curve = psnr(np.repeat(real[:, :1], real.shape[1], axis=1), real).mean(axis=0)
    firsts = np.stack([t.frames[0] for t in trajs])
    real_all = np.concatenate([t.frames[:LONG + 1] for t in trajs])
    distinct = [len(np.unique(dreamer.encode(f).cpu().numpy())) for f in (firsts, real_all)]
    usage = distinct[0] / distinct[1]
    metrics = {**{f"psnr@{h}": float(curve[h]) for h in HORIZONS}, "delta_psnr@16": 0.0,
               "code_usage@256": usage, "grad_ratio@256": grad_magnitude(firsts) / grad_magnitude(real_all)}
    return metrics, curve


def _real_yaw_response(trajs, plan) -> float:
    real = np.stack([trajs[i].frames[s:s + OTHER + 1] for i, s in plan])
    return yaw_response(real, np.stack([trajs[i].actions[s:s + OTHER] for i, s in plan]))


def evaluate(ckpt, tokens_root, out, *, compare=None, clips=None, max_rollouts: int = 48, seed: int = 0,
             device: str | None = None, video_rollouts: int = 6, sampling: dict | None = None,
             dtype: str = "fp32") -> dict:
    """Write OUT/metrics.json, rollouts.npz, dream.mp4 and psnr.png; return the metrics. dtype: the
    precision of the model's (and the decoder's) convolutions and linear layers, as a live backend
    runs them (ochre.runtime.stepper); the repeat-frame baseline and --compare stay fp32."""
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    out = Path(out)
    index = read_index(tokens_root)
    clips = Path(clips) if clips else indexed_folder(tokens_root, "clips", index)
    if not (clips / "index.json").is_file():
        raise FileNotFoundError(f"clip shards of {tokens_root} not found at {clips!s}; pass --clips")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = load_tokenizer(indexed_folder(tokens_root, "tokenizer_checkpoint", index), device)
    trajs = heldout_trajectories(clips)
    plan = _plan(trajs, max_rollouts)
    other = _other(plan)
    model, shipped, meta = load_dynamics(ckpt, device)
    sampling = SamplingConfig(**{**asdict(shipped), **(sampling or {})})     # overrides, for sweeps
    low_model, low_decoder = in_dtype((model, tokenizer), dtype)
    metrics, arrays = evaluate_model(Dreamer(low_model, tokenizer, sampling, seed, decoder=low_decoder), trajs, plan,
                                     other)
    metrics["real/yaw_response"] = _real_yaw_response(trajs, plan)
    repeat, repeat_curve = repeat_frame_metrics(arrays["real"], trajs, Dreamer(model, tokenizer, sampling))
    metrics.update({f"repeat_frame/{k}": v for k, v in repeat.items()})
    curves = {meta["extra"].get("recipe", "model"): arrays["curve"], "repeat_frame": repeat_curve}
    if compare:
        other_model, other_sampling, other_meta = load_dynamics(compare, device)
        name = other_meta["extra"].get("recipe", "compare")
        cmp_dreamer = Dreamer(other_model, tokenizer, other_sampling, seed)
        cmp_metrics, cmp_arrays = evaluate_model(cmp_dreamer, trajs, plan, other)
        metrics.update({f"{name}/{k}": v for k, v in cmp_metrics.items()})
        curves[name] = cmp_arrays["curve"]
    metrics.update({"rollouts": len(plan), "rollouts@256": len(trajs), "heldout_trajectories": len(trajs),
                    "step": meta["step"], "dtype": dtype, **asdict(sampling)})
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", metrics)
    with atomic_path(out / "rollouts.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **{k: v for k, v in arrays.items() if k != "curve"},
                            keys=np.array([trajs[i].key for i, _ in plan]),
                            starts=np.array([s for _, s in plan], np.int64))
    from ochre.viz import dream_video, psnr_plot
    dream_video(out / "dream.mp4", arrays["real"][:video_rollouts], arrays["dream"][:video_rollouts],
                arrays["actions"][:video_rollouts])
    psnr_plot(out / "psnr.png", curves)
    return metrics


def run(args) -> int:
    from ochre.models.checkpoint import CheckpointError

    try:
        # One --flag per SamplingConfig field (ochre/cli.py), None where not given.
        overrides = {f.name: getattr(args, f.name) for f in fields(SamplingConfig) if getattr(args, f.name) is not None}
        metrics = evaluate(args.checkpoint, args.tokens, args.out, compare=args.compare, clips=args.clips,
                           max_rollouts=args.rollouts, seed=args.seed, device=args.device, sampling=overrides,
                           dtype=args.dtype)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"ochre eval: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    print(f"wrote metrics.json, rollouts.npz, dream.mp4 and psnr.png to {args.out}")
    return 0
