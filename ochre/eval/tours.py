"""Tours (docs/metrics.md#tours-scripted-play-against-the-renderers-truth): scripted play against the
synthetic renderer's truth.

A context is a kept frame of a held-out synthetic recording and the camera pose it was rendered at,
found from the provenance `ochre prepare` copies into each clip (`synthetic`: world seed, episode,
steps). Every segment of SEGMENTS runs from every context on a dream function and on the world's
renderer, which gives the true frames for the same actions from the same pose.

A dream function: dream(context uint8 (N, H, W, 3), actions float32 (N, S, 4), truth uint8
(N, S+1, H, W, 3) | None) -> uint8 (N, S+1, H, W, 3), frame 0 the decoded context. `truth` lets
calibration dreamers (an oracle, a still dream) be scored by the same code; models ignore it.
Legend: N contexts, S steps, T frames, H W pixels, Z candidate zooms, C the central crop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ochre.actions import CAMERA_CLIP_DEG, TICKS_PER_SECOND, kept_ticks
from ochre.data.check import phase_shift
from ochre.data.loader import spread_over_sources
from ochre.data.shards import load_npy, read_index, tar_samples
from ochre.data.synth import Poses, World, episode_poses, make_world, render, walk
from ochre.data.video import decode_frames
from ochre.eval.rollouts import psnr

Dream = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]

# name -> (steps, action [yaw, pitch, move_x, move_z]), in the order of the docs' table.
SEGMENTS: dict[str, tuple[int, tuple[float, float, float, float]]] = {
    "still": (16, (0.0, 0.0, 0.0, 0.0)),
    "turn_right": (16, (0.5, 0.0, 0.0, 0.0)),
    "turn_left": (16, (-0.5, 0.0, 0.0, 0.0)),
    "look_up": (8, (0.0, -0.4, 0.0, 0.0)),
    "look_down": (8, (0.0, 0.4, 0.0, 0.0)),
    "look_up_slow": (16, (0.0, -0.1, 0.0, 0.0)),
    "look_down_slow": (16, (0.0, 0.1, 0.0, 0.0)),
    "walk": (16, (0.0, 0.0, 0.0, 1.0)),
    "strafe_left": (16, (0.0, 0.0, -1.0, 0.0)),
    "strafe_right": (16, (0.0, 0.0, 1.0, 0.0)),
    "turn_walk": (16, (0.5, 0.0, 0.0, 1.0)),
    "spin": (48, (0.5, 0.0, 0.0, 0.0)),         # 48 x 7.5 degrees: one full turn
}
TURNS = {"turn_right": 1, "turn_left": 1, "look_up": 0, "look_down": 0,     # segment -> phase_shift axis
         "look_up_slow": 0, "look_down_slow": 0}                            # (0: dy, 1: dx)
STRAFES = ("strafe_left", "strafe_right")
WALKS = ("walk", "turn_walk")
HORIZONS = (4, 16)                  # psnr@h; a segment shorter than 16 steps reports its last step
MIN_TRUE_SHIFT = 0.5                # px: smaller true shifts are left out of the sign rules
STILL_SHIFT = 0.1                   # px: a smaller dreamed shift counts as none (identical frames
                                    # read as ±1e-11 px, which must not score as a sign)
MIN_TRUE_ZOOM = 0.03                # walking steps whose truth reads a smaller expansion are left out of the
                                    # walk rule: the oracle (the tokenizer's reconstruction of the truth)
                                    # reads them on the wrong side too often (chosen on val: bench/walk_rule.py)
# Candidate zooms, nearest to 1 first, so that a tie (a flat sky) reads as no zoom.
ZOOMS = sorted(np.round(np.arange(0.90, 1.105, 0.01), 2), key=lambda z: (abs(z - 1.0), z))
ZOOM_MARGIN = 8                     # px cut from each side: the zoom is judged on the central 48 x 48
POSE_FIELDS = ("u", "v", "eye", "yaw", "pitch")


@dataclass
class TourContext:
    key: str                # the clip sample
    start: int              # its kept frame
    frame: np.ndarray       # (H, W, 3) uint8, the clip's decoded frame
    seed: int               # the synthetic world
    pose: tuple[float, float, float, float, float]     # (u, v, eye, yaw, pitch) at that frame


# ---- contexts -------------------------------------------------------------------------------

def tour_contexts(clips_root, sources: frozenset[str], n: int) -> list[TourContext] | str:
    """Up to n contexts spread evenly over the kept frames of `sources`' clips, or a reason string
    when tours cannot run on this data (no clips, or recordings without synthetic provenance)."""
    clips_root = Path(clips_root)
    index = read_index(clips_root)
    picks = spread_over_sources(index, n, lambda source: source in sources)
    if not picks:
        return f"tours skipped: {clips_root} has no clips of the {len(sources)} held-out recordings"
    urls = [str(clips_root / shard["file"]) for shard in index["shards"]
            if any(s["key"] in picks for s in shard["samples"])]
    paths: dict[tuple, Poses] = {}
    contexts = []
    for sample in tar_samples(urls):
        if sample["__key__"] not in picks:
            continue
        meta = json.loads(sample["json"])
        why = _not_synthetic(meta)
        if why:
            return f"tours skipped: {meta['source']} {why}"
        syn = meta["synthetic"]
        ident = (syn["seed"], syn["episode"], syn["steps"])
        if ident not in paths:
            paths[ident] = episode_poses(*ident)
        ticks = load_npy(sample["ticks.npy"])                                    # (K,) source states
        frames = decode_frames(sample["mp4"], picks[sample["__key__"]])          # (k, H, W, 3)
        contexts += [TourContext(sample["__key__"], i, frame, syn["seed"], paths[ident].pose(int(ticks[i])))
                     for i, frame in zip(picks[sample["__key__"]], frames)]
    return contexts


def _not_synthetic(meta: dict) -> str | None:
    """Why a clip's provenance cannot place tours (None when it can)."""
    syn = meta.get("synthetic")
    if not isinstance(syn, dict):
        return "is not an `ochre synth` recording in the MineRL layout (its clip carries no synthetic provenance)"
    if not all(isinstance(syn.get(k), int) for k in ("seed", "episode", "steps")):
        return ("was synthesized before recordings carried their episode length; run `ochre synth` and "
                "`ochre prepare` again to give it one")
    return None


# ---- the truth -------------------------------------------------------------------------------

def step_ticks(steps: int, fps: float) -> np.ndarray:
    """(S+1,) the 20 Hz tick at which each model step starts, by prepare's kept-tick rule
    (ochre.actions.kept_ticks: floor(k * 20 / fps)), so step k spans ticks[k] .. ticks[k+1]-1."""
    span = int(np.ceil((steps + 1) * TICKS_PER_SECOND / fps)) + 1
    return kept_ticks(span, fps)[:steps + 1]


def tick_controls(actions: np.ndarray, ticks: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-tick controls that prepare would encode back into `actions` (S, 4) over `ticks` (S+1,):
    camera (n, 2) [pitch, yaw] degrees, yaw·15° and pitch·15° spread evenly over the step's ticks,
    and the movement keys held for the whole step -> (camera, keys (n,) uint8 each)."""
    actions = np.asarray(actions, np.float64)
    if np.abs(actions[:, :2]).max(initial=0) > 1 or not np.isin(actions[:, 2:], (-1, 0, 1)).all():
        raise ValueError("tour actions need |yaw|, |pitch| <= 1 and move_x, move_z in {-1, 0, 1} "
                         "(keys are held for whole steps)")
    lengths = np.diff(ticks)                                                      # (S,)
    per_tick = np.repeat(actions, lengths, axis=0)                                # (n, 4)
    degrees = np.repeat(CAMERA_CLIP_DEG / lengths, lengths)[:, None]              # (n, 1)
    camera = per_tick[:, [1, 0]] * degrees                                        # (n, 2) [pitch, yaw]
    keys = {"right": per_tick[:, 2] > 0, "left": per_tick[:, 2] < 0,
            "forward": per_tick[:, 3] > 0, "back": per_tick[:, 3] < 0}
    return camera, {k: v.astype(np.uint8) for k, v in keys.items()}


def tour_path(world: World, pose, actions: np.ndarray, fps: float) -> Poses:
    """The camera at each of the S+1 model frames when `actions` (S, 4) play from `pose`."""
    ticks = step_ticks(len(actions), fps)
    camera, keys = tick_controls(actions, ticks)
    u, v, eye, yaw, pitch = pose
    return walk(world, camera, keys, (u, v, yaw, pitch), eye=eye).take(ticks)


def truth_frames(world: World, pose, actions: np.ndarray, fps: float, size: int = 64) -> np.ndarray:
    """The renderer's frames uint8 (S+1, H, W, 3) for `actions` (S, 4) from `pose`; frame 0 at the pose."""
    return render(world, tour_path(world, pose, actions, fps), size)


def render_truth(contexts: list[TourContext], fps: float, size: int = 64) -> dict[str, np.ndarray]:
    """Every segment on the renderer from every context (one render call per world and segment) ->
    {"<segment>/truth": uint8 (N, S+1, H, W, 3), "<segment>/pose": float64 (N, S+1, 5) (u, v, eye, yaw,
    pitch)}. The same for every dreamer, so run_tours takes it once made."""
    out = {}
    for name, (steps, action) in SEGMENTS.items():
        actions = np.tile(np.asarray(action, np.float32), (steps, 1))                 # (S, 4)
        frames = np.empty((len(contexts), steps + 1, size, size, 3), np.uint8)
        poses = np.empty((len(contexts), steps + 1, 5))
        for seed in sorted({c.seed for c in contexts}):
            world, mine = make_world(seed), [i for i, c in enumerate(contexts) if c.seed == seed]
            paths = [tour_path(world, contexts[i].pose, actions, fps) for i in mine]
            joined = Poses(*(np.concatenate([getattr(p, f) for p in paths]) for f in POSE_FIELDS))
            frames[mine] = render(world, joined, size).reshape(len(mine), steps + 1, size, size, 3)
            poses[mine] = np.stack([np.stack([getattr(p, f) for f in POSE_FIELDS], -1) for p in paths])
        out[f"{name}/truth"], out[f"{name}/pose"] = frames, poses
    return out


# ---- image motion ----------------------------------------------------------------------------

def rollout_shifts(frames: np.ndarray) -> np.ndarray:
    """Phase-correlation shift (dy, dx) of each step: (N, S+1, H, W, 3) -> (N, S, 2)."""
    n, t = frames.shape[:2]
    flat = phase_shift(frames.reshape(n * t, *frames.shape[2:]))                 # (N·T − 1, 2)
    return np.concatenate([flat, flat[:1]]).reshape(n, t, 2)[:, :-1]             # drop cross-rollout pairs


def rollout_zooms(frames: np.ndarray) -> np.ndarray:
    """zoom_factors of each step: (N, S+1, H, W, 3) -> (N, S)."""
    n, t = frames.shape[:2]
    flat = zoom_factors(frames.reshape(n * t, *frames.shape[2:]))                # (N·T − 1,)
    return np.concatenate([flat, flat[:1]]).reshape(n, t)[:, :-1]


def zoom_factors(frames: np.ndarray) -> np.ndarray:
    """The zoom z in ZOOMS that best maps frame t, moved by its phase-correlation shift and scaled by
    z about the image centre, onto frame t+1 (least squared error of the grey central 48 x 48, i.e.
    best PSNR): (T, H, W, 3) -> (T-1,). Above 1: the view expands (walking forward)."""
    shift = phase_shift(frames)                                                   # (T-1, 2) dy, dx
    grey = frames.astype(np.float32).mean(axis=-1)                                # (T, H, W)
    size, m = grey.shape[1], ZOOM_MARGIN
    centres = np.arange(m, size - m) + 0.5 - size / 2                             # (C,) about the centre
    target = grey[1:, m:-m, m:-m]                                                 # (T-1, C, C)
    errors = []
    for z in ZOOMS:
        # Bilinear resampling is separable: rows (T-1, C, H) @ image @ columns (T-1, W, C); as dense
        # matrix products it runs ~3x faster than gathering the samples.
        rows = _bilinear(size / 2 + centres / z - shift[:, :1] - 0.5, size)
        cols = _bilinear(size / 2 + centres / z - shift[:, 1:] - 0.5, size)
        warped = rows @ grey[:-1] @ cols.transpose(0, 2, 1)                      # (T-1, C, C)
        errors.append(np.square(warped - target).mean(axis=(1, 2)))
    return np.asarray(ZOOMS)[np.argmin(errors, axis=0)]                          # first of ties: nearest 1


def _bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """Linear-interpolation weights (T, C, size) of source positions x (T, C) in pixel index units,
    clamped to the border."""
    x = np.clip(x, 0, size - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), size - 2)
    frac = (x - x0).astype(np.float32)
    weights = np.zeros((*x.shape, size), np.float32)
    t, c = np.indices(x.shape)
    weights[t, c, x0] = 1 - frac
    weights[t, c, x0 + 1] = frac
    return weights


# ---- metrics ---------------------------------------------------------------------------------

def sign_agreement(true: np.ndarray, dream: np.ndarray) -> tuple[float | None, float | None]:
    """Over steps whose true shift is at least MIN_TRUE_SHIFT: the share whose dreamed shift has the
    true sign (a dreamed shift under STILL_SHIFT has none), and the median dreamed ÷ true shift.
    (None, None) when no step qualifies."""
    keep = np.abs(true) >= MIN_TRUE_SHIFT
    if not keep.any():
        return None, None
    sign = np.where(np.abs(dream) >= STILL_SHIFT, np.sign(dream), 0.0)
    return float(np.mean(sign[keep] == np.sign(true[keep]))), float(np.median(dream[keep] / true[keep]))


def judged_zooms(zooms: np.ndarray, min_zoom: float = MIN_TRUE_ZOOM) -> np.ndarray:
    """Which zooms are at least min_zoom from 1 (the zooms are rounded to 0.01): bool, same shape."""
    return np.abs(zooms - 1.0) > min_zoom - 1e-6


def expansions(zooms: np.ndarray, min_zoom: float = MIN_TRUE_ZOOM) -> np.ndarray:
    """Which zooms expand the view by at least min_zoom: bool, same shape."""
    return zooms > 1.0 + min_zoom - 1e-6


def zoom_agreement(true: np.ndarray, dream: np.ndarray, min_zoom: float = MIN_TRUE_ZOOM) -> float | None:
    """Over the walking steps whose true frames read an expansion of at least min_zoom: the share whose
    dreamed zoom expands the view too. A step forward can only expand the view, so a true zoom below 1
    is the estimator misreading the truth (about 1 judged step in 20 of the oracle's tours, most of them
    while turning), not a motion to judge the dream by."""
    keep = expansions(true, min_zoom)
    return float(np.mean(dream[keep] > 1.0)) if keep.any() else None


def psnr_metrics(name: str, truth: np.ndarray, dream: np.ndarray) -> dict[str, float]:
    """tour/<name>/psnr@h and tour/<name>/repeat/psnr@h (the true frame 0 held) for one segment."""
    steps = truth.shape[1] - 1
    out = {}
    for h in sorted({min(h, steps) for h in HORIZONS}):
        out[f"tour/{name}/psnr@{h}"] = float(psnr(dream[:, h], truth[:, h]).mean())
        out[f"tour/{name}/repeat/psnr@{h}"] = float(psnr(truth[:, 0], truth[:, h]).mean())
    return out


def level_steps(pose: np.ndarray) -> np.ndarray:
    """Which steps keep the true eye height, from the true cameras (N, S+1, 5) -> bool (N, S). A step up
    onto a block or a fall moves the view vertically, which is neither a zoom nor a sideways shift."""
    return np.abs(np.diff(pose[..., 2], axis=1)) < 1e-6


def walk_zooms(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """True and dreamed zooms of the WALKS steps on level ground where the camera moved -> two (n,)
    arrays. A step whose true eye height changes is left out: the zoom read from it has either sign
    about as often; so is a step blocked by a wall, which moves nothing."""
    keep = [level_steps(pose) & (np.hypot(*np.diff(pose[..., :2], axis=1).transpose(2, 0, 1)) > 1e-6)
            for pose in (arrays[f"{name}/pose"] for name in WALKS)]                              # (N, S)
    return tuple(np.concatenate([rollout_zooms(arrays[f"{name}/{kind}"])[ok] for name, ok in zip(WALKS, keep)])
                 for kind in ("truth", "dream"))


def strafe_shifts(arrays: dict[str, np.ndarray], pairs: dict | None = None, *,
                  level_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """True and dreamed horizontal shifts (px) of the STRAFES steps -> two (n,) arrays; with level_only
    (the rule) the steps whose true eye height changes are left out, as for walks: the vertical move
    decides the phase correlation's peak, and the reconstruction of the truth reads its horizontal
    shift on the other side of 0 several times as often as on level steps (bench/walk_rule.py).
    pairs: rollout_shifts of each segment's truth and dream when already computed."""
    out = ([], [])
    for name in STRAFES:
        truth, dream = pairs[name] if pairs else (rollout_shifts(arrays[f"{name}/{k}"]) for k in ("truth", "dream"))
        keep = level_steps(arrays[f"{name}/pose"]) if level_only else np.ones(truth.shape[:2], bool)
        out[0].append(truth[..., 1][keep])
        out[1].append(dream[..., 1][keep])
    return np.concatenate(out[0]), np.concatenate(out[1])


def tour_metrics(arrays: dict[str, np.ndarray]) -> dict:
    """The docs' tour/… metrics from {"<segment>/truth", "<segment>/dream"} uint8 (N, S+1, H, W, 3) and
    the true cameras {"<segment>/pose"} (N, S+1, 5)."""
    metrics: dict = {"tour/contexts": len(arrays["still/truth"])}
    for name in SEGMENTS:
        metrics.update(psnr_metrics(name, arrays[f"{name}/truth"], arrays[f"{name}/dream"]))
    pairs = {name: (rollout_shifts(arrays[f"{name}/truth"]), rollout_shifts(arrays[f"{name}/dream"]))
             for name in (*TURNS, *STRAFES)}                                   # (N, S, 2) each
    turn = [np.concatenate([pairs[name][i][..., axis].ravel() for name, axis in TURNS.items()]) for i in (0, 1)]
    metrics["tour/turn_sign_acc"], metrics["tour/turn_gain"] = sign_agreement(*turn)
    metrics["tour/strafe_sign_acc"] = sign_agreement(*strafe_shifts(arrays, pairs))[0]
    metrics["tour/walk_sign_acc"] = zoom_agreement(*walk_zooms(arrays))
    spin = arrays["spin/dream"]
    metrics["tour/revisit_psnr"] = float(psnr(spin[:, -1], spin[:, 0]).mean())
    return metrics


# ---- running -------------------------------------------------------------------------------------

def segment_actions(name: str, n: int) -> np.ndarray:
    """The actions of a segment for n contexts: float32 (n, S, 4)."""
    steps, action = SEGMENTS[name]
    return np.tile(np.asarray(action, np.float32), (n, steps, 1))


def run_tours(dream: Dream, contexts: list[TourContext], fps: float, size: int = 64, *,
              truth: dict[str, np.ndarray] | None = None, progress: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """Every segment from every context on `dream` and on the renderer -> (metrics, arrays for tours.npz:
    "<segment>/truth", "<segment>/dream" uint8 (N, S+1, H, W, 3), "<segment>/pose", "segment", "key",
    "start"). truth: render_truth(contexts, fps, size) when already made (several dreamers, one truth)."""
    if not contexts:
        raise ValueError("run_tours needs at least one context (tour_contexts found none)")
    context = np.stack([c.frame for c in contexts])                               # (N, H, W, 3)
    if context.shape[1:] != (size, size, 3):
        raise ValueError(f"context frames are {context.shape[1:]}, the tours render {size}x{size}")
    arrays = dict(truth if truth is not None else render_truth(contexts, fps, size))
    for name in tqdm(SEGMENTS, desc="tours", unit="segment", disable=not progress):
        true = arrays[f"{name}/truth"]                                            # (N, S+1, H, W, 3)
        dreamed = dream(context, segment_actions(name, len(contexts)), true)
        if dreamed.shape != true.shape or dreamed.dtype != np.uint8:
            raise ValueError(f"the dream of {name!r} is {dreamed.dtype} {dreamed.shape}, want uint8 {true.shape}")
        arrays[f"{name}/dream"] = dreamed
    metrics = tour_metrics(arrays)
    arrays.update(segment=np.array(list(SEGMENTS)), key=np.array([c.key for c in contexts]),
                  start=np.array([c.start for c in contexts], np.int64))
    return metrics, arrays


def tour_video(path, arrays: dict[str, np.ndarray], n: int = 4, fps: float = 8.0) -> None:
    """An mp4 of the first n contexts, truth | dream side by side with the actions below, segment
    after segment under the segment's name."""
    from ochre.data.video import write_mp4
    from ochre.viz import dream_frames, title_strip

    video = []
    for name in SEGMENTS:
        truth, dream = arrays[f"{name}/truth"][:n], arrays[f"{name}/dream"][:n]
        actions = segment_actions(name, len(truth))
        panels = [dream_frames(truth[i:i + 1], dream[i:i + 1], actions[i:i + 1]) for i in range(len(truth))]
        grid = np.concatenate(panels, axis=1)                                     # (S+1, n·(4H+40), 8W+4, 3)
        title = title_strip(f"{name}: truth | dream", grid.shape[2])
        video.append(np.concatenate([np.repeat(title[None], len(grid), axis=0), grid], axis=1))
    write_mp4(path, np.concatenate(video), fps, crf=18, pix_fmt="yuv420p")
