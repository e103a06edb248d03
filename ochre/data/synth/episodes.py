"""Episodes and the `ochre synth` command: world + policy + renderer -> recordings on disk.

Everything is a function of (seed, episode index): bit-exact regardless of --workers.
Legend: L loading frames, N actions, S image size.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ochre.actions import VPT_DEG_PER_COUNT
from ochre.data.synth.policy import Actions, action_mix, policy
from ochre.data.synth.renderer import horizon_in_view, render
from ochre.data.synth.world import FOREST, GRASS, SAND, Poses, World, make_world, walk
from ochre.data.synth.writers import write_minerl, write_vpt
from ochre.io import remove_temporaries
from ochre.parallel import pool_size, process_map


@dataclass(frozen=True)
class Episode:
    frames: np.ndarray              # (N+1, S, S, 3) uint8, states 0..N
    loading: np.ndarray             # (L, S, S, 3) uint8, loading screens before state 0 (MineRL layout)
    camera: np.ndarray              # (N, 2) float64 degrees, [pitch, yaw], exactly what was rendered
    keys: dict[str, np.ndarray]     # KEY_NAMES -> (N,) uint8
    behaviour: np.ndarray           # (N,) int8 into BEHAVIOURS
    poses: Poses                    # N+1 camera states


def _episode_rngs(seed: int, index: int) -> list[np.random.Generator]:
    """Independent streams (start angles, start position, policy, loading screens) from (seed, index)."""
    children = np.random.SeedSequence([seed % 2**64, 1, index]).spawn(4)
    return [np.random.default_rng(c) for c in children]


def episode_actions(seed: int, index: int, steps: int, *,
                    mouse_counts: bool = False) -> tuple[Actions, float, float]:
    """The actions of episode `index` without rendering -> (Actions, yaw0, pitch0).

    mouse_counts: whole VPT mouse counts (the vpt layout); otherwise float32-exact degrees, the
    precision rendered.npz stores, so the frames match the recorded actions bit for bit.
    """
    angle_rng, _, policy_rng, _ = _episode_rngs(seed, index)
    yaw0, pitch0 = float(angle_rng.uniform(0.0, 360.0)), float(angle_rng.uniform(-10.0, 25.0))
    actions = policy(policy_rng, steps, pitch0=pitch0, quantum=VPT_DEG_PER_COUNT if mouse_counts else None)
    if not mouse_counts:
        actions = Actions(actions.camera.astype(np.float32).astype(np.float64), actions.keys, actions.behaviour)
    return actions, yaw0, pitch0


def _start_position(rng: np.random.Generator, world: World) -> tuple[float, float]:
    """A random spot on low land (not sea, mountain or tree top) when one turns up within 64 tries."""
    for _ in range(64):
        u, v = rng.uniform(0.0, world.size, 2)
        if world.biome[int(u), int(v)] in (SAND, GRASS, FOREST):
            break
    return float(u), float(v)


def _episode_path(seed: int, index: int, steps: int, mouse_counts: bool) -> tuple[World, Actions, Poses]:
    """The world, the policy's actions and the camera path of an episode: everything but the pixels."""
    world = make_world(seed)
    actions, yaw0, pitch0 = episode_actions(seed, index, steps, mouse_counts=mouse_counts)
    _, place_rng, _, _ = _episode_rngs(seed, index)
    u0, v0 = _start_position(place_rng, world)
    return world, actions, walk(world, actions.camera, actions.keys, (u0, v0, yaw0, pitch0))


def episode_poses(seed: int, index: int, steps: int, *, mouse_counts: bool = False) -> Poses:
    """The N + 1 camera states of episode `index` without rendering (what tours start from)."""
    return _episode_path(seed, index, steps, mouse_counts)[2]


def render_episode(seed: int, index: int, steps: int, size: int = 64, *,
                   mouse_counts: bool = False) -> Episode:
    """Episode `index` of `seed`: policy actions, the camera path and S x S frames (plus loading screens)."""
    world, actions, poses = _episode_path(seed, index, steps, mouse_counts)
    loading_rng = _episode_rngs(seed, index)[3]
    return Episode(render(world, poses, size), loading_frames(loading_rng, size),
                   actions.camera, actions.keys, actions.behaviour, poses)


def loading_frames(rng: np.random.Generator, size: int) -> np.ndarray:
    """1-6 "loading screen" frames (L, S, S, 3): dark dirt tiles, maybe a progress bar; nothing like the world."""
    count = int(rng.integers(1, 7))
    tile = rng.choice(np.array([0.6, 0.8, 1.0, 1.15], np.float32), size=(8, 8))
    reps = -(-size // 8)
    dirt = np.tile(tile, (reps, reps))[:size, :size, None] * np.array([134, 96, 67], np.float32) * 0.3
    frames = np.repeat(dirt[None], count, axis=0)                      # (L, S, S, 3)
    if rng.random() < 0.5:                                             # a filling progress bar
        y, x0, x1 = size * 2 // 3, size // 6, size - size // 6
        for i in range(count):
            frames[i, y:y + max(1, size // 32), x0:x0 + (x1 - x0) * (i + 1) // count] = (128, 255, 128)
    return frames.clip(0, 255).astype(np.uint8)


# ---- the command --------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthConfig:
    episodes: int = 16
    steps: int = 400
    seed: int = 0
    layout: str = "minerl"          # "minerl" | "vpt"
    size: int = 64
    workers: int | None = None      # None: all cores

    def __post_init__(self):
        if self.layout not in ("minerl", "vpt"):
            raise ValueError(f"layout must be 'minerl' or 'vpt', got {self.layout!r}")
        if min(self.episodes, self.steps) < 1 or self.size < 8:
            raise ValueError(f"need episodes >= 1, steps >= 1, size >= 8; got {self}")


def episode_name(seed: int, index: int, layout: str) -> str:
    """Stream names shaped like the real ones: MineRL `v3_<words>_<ids>`, VPT `<words>-<ids>`."""
    return f"v3_synth_{seed}_{index:04d}" if layout == "minerl" else f"synth-{seed}-{index:04d}"


def _done(out: Path, cfg: SynthConfig, index: int) -> bool:
    # Both writers rename into place last (the folder; the mp4), so existence means complete.
    name = episode_name(cfg.seed, index, cfg.layout)
    return (out / name).is_dir() if cfg.layout == "minerl" else (out / f"{name}.mp4").is_file()


def _write_episode(job: tuple[Path, SynthConfig, int]) -> int:
    """Render and write one episode (runs in a worker process); returns the video frames written."""
    out, cfg, index = job
    ep = render_episode(cfg.seed, index, cfg.steps, cfg.size, mouse_counts=cfg.layout == "vpt")
    name = episode_name(cfg.seed, index, cfg.layout)
    if cfg.layout == "vpt":
        write_vpt(out / name, ep.frames, ep.camera, ep.keys, yaw0=ep.poses.yaw[0], pitch0=ep.poses.pitch[0])
        return len(ep.frames)
    # Provenance: (seed, episode, steps) names the world and the camera path (episode_poses), so
    # prepare can carry it into the clips and tours can put the camera back at any recorded frame.
    meta = {"synthetic": {"seed": cfg.seed, "episode": index, "steps": cfg.steps, "loading_frames": len(ep.loading)}}
    write_minerl(out / name, np.concatenate([ep.loading, ep.frames]), ep.camera, ep.keys, len(ep.loading),
                 meta=meta)
    return len(ep.loading) + len(ep.frames)


def _remove_stale(out: Path, cfg: SynthConfig) -> None:
    """Delete temporaries an interrupted run left behind (hidden `.<episode name>...tmp` entries)."""
    remove_temporaries(out, f".{episode_name(cfg.seed, 0, cfg.layout)[:-4]}*.tmp")


def synthesize(out: str | os.PathLike, cfg: SynthConfig, *, progress: bool = True) -> dict:
    """Write cfg.episodes recordings into `out`, skipping complete ones; returns a summary dict."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out, cfg)
    todo = [(out, cfg, i) for i in range(cfg.episodes) if not _done(out, cfg, i)]
    workers = pool_size(cfg.workers, len(todo))
    start, frames = time.perf_counter(), 0
    with process_map(workers) as mapper:
        for n in tqdm(mapper(_write_episode, todo), total=len(todo), unit="episode", desc="synth",
                      disable=not progress):
            frames += n
    seconds = time.perf_counter() - start
    return {"episodes": cfg.episodes, "written": len(todo), "skipped": cfg.episodes - len(todo),
            "frames": frames, "seconds": seconds, "frames_per_s": frames / max(seconds, 1e-9),
            "workers": workers, "mix": dataset_mix(cfg),
            "horizon_share": horizon_share(cfg)}


def dataset_mix(cfg: SynthConfig) -> dict[str, float]:
    """Behaviour proportions over all ticks of all episodes (policy only: no rendering)."""
    behaviour = [episode_actions(cfg.seed, i, cfg.steps, mouse_counts=cfg.layout == "vpt")[0].behaviour
                 for i in range(cfg.episodes)]
    return action_mix(np.concatenate(behaviour))


def horizon_share(cfg: SynthConfig) -> float:
    """Share of all frames (states) whose view holds the horizon (policy only: no rendering)."""
    inside = []
    for i in range(cfg.episodes):
        actions, _, pitch0 = episode_actions(cfg.seed, i, cfg.steps, mouse_counts=cfg.layout == "vpt")
        pitch = pitch0 + np.concatenate([[0.0], np.cumsum(actions.camera[:, 0])])   # as walk() integrates it
        inside.append(horizon_in_view(pitch, cfg.size))
    return float(np.concatenate(inside).mean())


def run(args) -> int:
    """`ochre synth OUT ...`: flags -> SynthConfig -> synthesize -> a short report."""
    cfg = SynthConfig(args.episodes, args.steps, args.seed, args.layout, args.size, args.workers)
    s = synthesize(args.out, cfg)
    print(f"synth: {s['written']} episodes written, {s['skipped']} already complete -> {args.out} "
          f"({cfg.layout} layout, {cfg.size}x{cfg.size}, {cfg.steps} steps)")
    print(f"  {s['frames']} video frames rendered and encoded in {s['seconds']:.1f} s: "
          f"{s['frames_per_s']:.0f} frames/s "
          f"with {s['workers']} worker(s)")
    print("  action mix: " + ", ".join(f"{k} {v:.1%}" for k, v in s["mix"].items()))
    print(f"  horizon in view: {s['horizon_share']:.1%} of frames")
    return 0
