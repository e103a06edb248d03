"""`ochre record luanti OUT`: episodes of the real game, written in the VPT layout `ochre prepare` reads.

Per episode i of seed K: a start (x, z, yaw, pitch) and the player's plan are drawn from (K, i); the
worker's game places the player there, drives the plan in lockstep (ochre.data.luanti.episode) and
the labels come from the engine's pose log (ochre.data.luanti.labels). Written per episode, in this
order, each file atomically: NAME.episode.json (where it started, how often the game did what was
sent, any cut), NAME.jsonl, NAME.mp4 — so an mp4 on disk means a complete episode, and a rerun
records only the missing ones. OUT/config.json holds what made the folder (ochre.data.shards
.claim_output): a rerun with other settings is refused; --episodes may grow. Each worker runs its
own X server and game for all its episodes; none outlives the recorder (ochre.data.luanti.processes).
Legend: N steps per episode.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ochre.data.luanti.behaviour import Hops, plan, player
from ochre.data.luanti.episode import NoLand, drive, place
from ochre.data.luanti.game import Game, GameConfig, GameError, find_binaries, fingerprint
from ochre.data.luanti.labels import agreement, labels
from ochre.data.luanti.processes import die_with_parent
from ochre.data.shards import OutputMismatch, claim_output
from ochre.data.synth.writers import write_vpt
from ochre.io import remove_temporaries, write_json_atomic
from ochre.parallel import pool_size, process_map

SPREAD = 1500.0             # nodes: episodes start anywhere in a square this far from the origin
START_TRIES = 8             # points tried in turn when the sea covers one's surroundings
RETRIES = 2                 # a game that crashes or stalls is restarted and the episode redone
WORK = ".work"              # per-worker game folders, removed at the end (and by the next run)
OUTPUTS = ("luanti-*", "summary.json", "config.json")
SLOW_FRAME_MS = 75.0        # an episode whose median step the game stretched past 1.5 x 50 ms
MILLI0 = 1_600_000_000_000  # the VPT lines' "milli" of frame 0, as ochre.data.synth.writers starts them


@dataclass(frozen=True)
class RecordConfig:
    episodes: int = 16
    steps: int = 400
    seed: int = 0
    width: int = 64
    height: int = 64
    hud: bool = False
    workers: int = 1

    def __post_init__(self):
        if min(self.episodes, self.steps, self.workers) < 1:
            raise ValueError(f"episodes, steps and workers must be >= 1; got {self}")
        if min(self.width, self.height) < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.width}x{self.height}")

    def game(self) -> GameConfig:
        return GameConfig(width=self.width, height=self.height, hud=self.hud, map_seed=self.seed)


def episode_name(seed: int, index: int) -> str:
    return f"luanti-{seed}-{index:04d}"


def episode_start(seed: int, index: int) -> tuple[list[dict], np.random.Generator, np.random.Generator]:
    """Where episode `index` may start ({x, z, yaw, pitch}: the first point with dry land near it),
    and its plan's and its hops' generators."""
    start_rng, plan_rng, hop_rng = (np.random.default_rng(c)
                                    for c in np.random.SeedSequence([seed % 2**64, 2, index]).spawn(3))
    yaw, pitch = start_rng.uniform(0.0, 360.0), start_rng.uniform(-10.0, 25.0)   # as `ochre synth` starts its players
    points = start_rng.uniform(-SPREAD, SPREAD, (START_TRIES, 2))
    starts = [{"x": float(x), "z": float(z), "yaw": float(yaw), "pitch": float(pitch)} for x, z in points]
    return starts, plan_rng, hop_rng


def game_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60).stdout
    return out.splitlines()[0].strip() if out else "unknown"


# ---- one episode --------------------------------------------------------------------------

def _place_somewhere(game: Game, name: str, starts: list[dict]):
    """Place the player at the first of `starts` with dry land near it -> (that start, where, the pose)."""
    for start in starts:
        try:
            return (start, *place(game, f"{name}-{time.monotonic_ns()}", **start))
        except NoLand as e:
            why = str(e)
    raise GameError(f"episode {name}: {why}, nor near {len(starts) - 1} other points (all sea?)")


def record_episode(game: Game, out: Path, cfg: RecordConfig, index: int, restarts: int = 0) -> dict:
    """Record and write episode `index`; returns its summary (also written as NAME.episode.json).
    restarts: games that crashed or stalled in earlier tries of this episode."""
    t0 = time.perf_counter()
    name = episode_name(cfg.seed, index)
    starts, plan_rng, hop_rng = episode_start(cfg.seed, index)
    start, where, first = _place_somewhere(game, name, starts)
    t1 = time.perf_counter()
    rec = drive(game, cfg.steps, player(plan(plan_rng, cfg.steps, first.pitch), Hops(hop_rng)), first)
    t2 = time.perf_counter()
    lab = labels(rec.poses, rec.passed)
    cut, n = lab.cut, len(lab.camera)
    if n < 1:
        raise GameError(f"episode {name} ended before its first step ({cut[1]})")
    poses = rec.poses[:n + 1]
    dtime = np.array([sum(p.dtime for p in rec.passed[t] + [rec.poses[t]]) for t in range(1, n + 1)]) * 1000
    summary = {
        "episode": name, "index": index, "requested": start, "start": where, "steps": n,
        "cut": None if cut is None else {"step": cut[0], "reason": cut[1]},
        "agreement": agreement(poses, rec.passed[:n + 1], rec.sent_counts[:n], rec.sent_keys[:n]),
        # game time between consecutive frames: one ~50 ms step, more on a busy machine
        "frame_ms": {"p50": float(np.median(dtime)), "p99": float(np.percentile(dtime, 99)), "max": float(dtime.max())},
        "in_water": float(np.mean([p.liquid for p in poses])), "restarts": restarts,
        "seconds": {"place": round(t1 - t0, 2), "drive": round(t2 - t1, 2)},
    }
    stem = out / name
    write_json_atomic(stem.with_suffix(".episode.json"), summary)
    # Each line's "milli" is the game's own clock (its steps last ~50 ms, longer on a busy machine);
    # yaw0/pitch0 feed the lines' informational yaw/pitch, which turn right-positive like the labels.
    clock = MILLI0 + np.round(np.concatenate([[0.0], np.cumsum(dtime)])).astype(np.int64)
    extra = [{"milli": int(ms), "pose": p.as_json()} for ms, p in zip(clock, poses)]
    write_vpt(stem, np.stack(rec.frames[:n + 1]), lab.camera, lab.keys, yaw0=-poses[0].yaw, pitch0=poses[0].pitch,
              extra=extra)
    return summary


# ---- a worker: one game for all of its episodes ----------------------------------------------

class Worker:
    """Records episodes with one game, restarted when it crashes or stalls."""

    def __init__(self, out: Path, cfg: RecordConfig):
        self.out, self.cfg = out, cfg
        self.game: Game | None = None
        self.workdir = out / WORK / f"{os.getpid()}"

    def record(self, index: int) -> dict:
        errors = []
        for _ in range(RETRIES + 1):
            try:
                if self.game is None:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                    self.game = Game(self.cfg.game(), self.workdir)
                    self.game.start()
                return record_episode(self.game, self.out, self.cfg, index, restarts=len(errors))
            except GameError as e:
                errors.append(str(e))
                self.close()
        raise GameError(f"episode {episode_name(self.cfg.seed, index)} failed {RETRIES + 1} times: "
                        + " / ".join(errors))

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
            self.game = None
        shutil.rmtree(self.workdir, ignore_errors=True)


_WORKER: Worker | None = None


def _init_pool_worker(parent: int, out: Path, cfg: RecordConfig) -> None:
    global _WORKER
    die_with_parent(parent)             # a recorder killed with SIGKILL takes its workers, and their games, along
    _WORKER = Worker(out, cfg)


def _pool_record(index: int) -> dict:
    return _WORKER.record(index)


# ---- the run ------------------------------------------------------------------------------

def run_record(cfg: RecordConfig, version: str) -> dict:
    """What makes a recordings folder: the settings, the game's version and the fingerprint of its
    setup (ochre.data.luanti.game.fingerprint); --episodes and --workers are left out (more episodes
    extend a folder, and the workers change nothing in it)."""
    config = {k: v for k, v in asdict(cfg).items() if k not in ("episodes", "workers")}
    return {"kind": "luanti_recordings", "config": {**config, "game": version, "setup": fingerprint(cfg.game())},
            "inputs": {}}


def _done(out: Path, cfg: RecordConfig, index: int) -> bool:
    return (out / f"{episode_name(cfg.seed, index)}.mp4").is_file()


@contextlib.contextmanager
def _exclusive(out: Path):
    """One recorder per folder at a time."""
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputMismatch(f"another `ochre record luanti` is writing {out}; wait for it to finish") from None
        yield


def _terminate(signum, frame):
    raise SystemExit(128 + signum)       # unwinds through every `finally`, which ends the games


def record(out: str | os.PathLike, cfg: RecordConfig, *, overwrite: bool = False, progress: bool = True) -> dict:
    """Record cfg.episodes episodes into `out`, keeping finished ones; returns the run's summary."""
    from tqdm import tqdm

    game_binary, _ = find_binaries()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        claim_output(out, run_record(cfg, game_version(game_binary)), overwrite=overwrite,
                     what="Luanti recordings", outputs=OUTPUTS)
        shutil.rmtree(out / WORK, ignore_errors=True)               # left by a recorder that was killed
        remove_temporaries(out, ".luanti-*.tmp")
        todo = [i for i in range(cfg.episodes) if not _done(out, cfg, i)]
        workers = pool_size(cfg.workers, len(todo))
        previous = {s: signal.signal(s, _terminate) for s in (signal.SIGTERM, signal.SIGHUP)}
        local = Worker(out, cfg) if workers == 1 else None
        t0, frames = time.perf_counter(), 0
        try:
            with process_map(workers, _init_pool_worker, (os.getpid(), out, cfg)) as mapper:
                bar = tqdm(total=len(todo), unit="episode", desc="record luanti", disable=not progress,
                           file=sys.stderr)
                for summary in mapper(local.record if local else _pool_record, todo):
                    frames += summary["steps"] + 1
                    bar.update()
                    bar.set_postfix(fps=f"{frames / (time.perf_counter() - t0):.1f}")
                bar.close()
        finally:
            if local is not None:
                local.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            shutil.rmtree(out / WORK, ignore_errors=True)
        seconds = time.perf_counter() - t0
        summary = summarize(out, cfg)
        summary.update(written=len(todo), kept=cfg.episodes - len(todo), workers=workers,
                       seconds=round(seconds, 2), frames_written=frames,
                       frames_per_s=round(frames / max(seconds, 1e-9), 2))
        write_json_atomic(out / "summary.json", summary)
        return summary


def summarize(out: Path, cfg: RecordConfig) -> dict:
    """The folder's episodes together: frames, cuts, and how often the game did what was sent."""
    eps = [json.loads((out / f"{episode_name(cfg.seed, i)}.episode.json").read_text()) for i in range(cfg.episodes)]
    agree = [e["agreement"] for e in eps]
    weights = np.array([a["transitions"] - a["multi_step"] for a in agree], np.float64)
    share = {k: float(np.average([a.get(k, 0.0) for a in agree], weights=weights))
             for k in ("camera_exact", "camera_within", "keys")} if weights.sum() else {}
    return {"episodes": len(eps), "frames": int(sum(e["steps"] + 1 for e in eps)),
            "cuts": [{"episode": e["episode"], **e["cut"]} for e in eps if e["cut"]],
            "did_as_sent": share, "multi_step_transitions": int(sum(a["multi_step"] for a in agree)),
            "restarts": int(sum(e["restarts"] for e in eps)),
            "slow": [e["episode"] for e in eps if e["frame_ms"]["p50"] > SLOW_FRAME_MS],
            "frame_ms_p99_max": max(e["frame_ms"]["p99"] for e in eps)}


def parse_size(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '160x90' -> (160, 90)."""
    w, _, h = text.lower().partition("x")
    try:
        width, height = int(w), int(h or w)
    except ValueError:
        raise ValueError(f"--size takes N or WxH (e.g. 64, 128, 160x90), not {text!r}") from None
    return width, height


def run(args) -> int:
    try:
        width, height = parse_size(args.size)
        cfg = RecordConfig(args.episodes, args.steps, args.seed, width, height, args.hud, args.workers)
        s = record(args.out, cfg, overwrite=args.overwrite)
    except (ValueError, OutputMismatch, GameError) as e:
        print(f"ochre record luanti: {e}", file=sys.stderr)
        return 2
    print(f"record luanti: {s['written']} episodes recorded, {s['kept']} already complete -> {args.out} "
          f"({width}x{height}, {cfg.steps} steps, {s['workers']} worker(s))")
    print(f"  {s['frames_written']} frames in {s['seconds']:.1f} s: {s['frames_per_s']:.1f} frames/s")
    if s["did_as_sent"]:
        d = s["did_as_sent"]
        print(f"  the game did what was sent: camera {d['camera_exact']:.1%} exactly, keys {d['keys']:.1%} "
              "(labels are what it did)")
    if s["slow"]:
        print(f"  {len(s['slow'])} episodes ran slower than the game's clock (median step over {SLOW_FRAME_MS:.0f} ms: "
              f"{', '.join(s['slow'][:4])}{', ...' if len(s['slow']) > 4 else ''}): the machine was too busy, so "
              "each frame moved the player further; give each worker a core of its own")
    if s["multi_step_transitions"]:
        print(f"  {s['multi_step_transitions']} transitions span more than one game step (frames the busy machine "
              "lost; labelled over all their steps)")
    for c in s["cuts"]:
        print(f"  cut: {c['episode']} after step {c['step']}: {c['reason']}")
    return 0
