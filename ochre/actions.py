"""The one encoding of actions (docs/data.md#actions): per-tick controls -> [yaw, pitch, move_x, move_z].

Both sides call this module: `ochre prepare` on recorded ticks, live play on the ticks that
pass between two model frames. Camera angles are **summed** over the window (the rotation
that actually happened; a mean would shrink it by the window length), clipped to ±15° and
scaled to [-1, 1]; movement is the mean key state, so it is in [-1, 1] too.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

TICKS_PER_SECOND = 20          # Minecraft's fixed simulation rate
CAMERA_CLIP_DEG = 15.0         # per model step; faster turns saturate
VPT_DEG_PER_COUNT = 360.0 / 2400.0   # 0.15 degrees per mouse count (VPT)
ACTION_NAMES = ("yaw", "pitch", "move_x", "move_z")
ACTIONS = len(ACTION_NAMES)


def kept_ticks(n_states: int, fps: float) -> np.ndarray:
    """Source state indices kept when resampling 20 Hz states to `fps`: floor(i * 20 / fps).

    Exact rational arithmetic, so fps=8 keeps 0, 2, 5, 7, 10, ... (windows of 2 and 3 ticks)
    with no drift however long the trajectory.
    """
    step = Fraction(TICKS_PER_SECOND) / Fraction(fps).limit_denominator(1000)
    if step < 1:
        raise ValueError(f"fps {fps} exceeds the {TICKS_PER_SECOND} Hz source rate")
    count = int((n_states - 1) / step) + 1 if n_states > 0 else 0
    return np.array([int(i * step) for i in range(count)], dtype=np.int64)


def encode_window_actions(
    camera: np.ndarray, move_x: np.ndarray, move_z: np.ndarray, ticks: np.ndarray
) -> np.ndarray:
    """Aggregate per-tick controls over the windows between consecutive kept ticks.

    camera: (N, 2) degrees per tick, [pitch, yaw] (positive pitch looks down, positive yaw
    turns right); move_x = right - left and move_z = forward - back, each (N,) in [-1, 1];
    ticks: (K,) increasing state indices. Action i covers ticks[i] .. ticks[i+1]-1, i.e. the
    actions that lead from state ticks[i] to state ticks[i+1]. Returns float32 (K-1, 4).
    """
    ticks = np.asarray(ticks, dtype=np.int64)
    if len(ticks) < 2:
        return np.zeros((0, 4), np.float32)
    if ticks[-1] > len(camera) or np.any(np.diff(ticks) <= 0):
        raise ValueError("ticks must increase and stay within the action arrays")
    # Prefix sums turn every window sum into one subtraction: O(N + K), no Python loop.
    def window_sum(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0, dtype=np.float64)])
        return c[ticks[1:]] - c[ticks[:-1]]

    length = np.diff(ticks).astype(np.float64)
    cam = window_sum(np.asarray(camera, np.float64))                # (K-1, 2) [pitch, yaw]
    out = np.empty((len(ticks) - 1, 4), np.float64)
    out[:, 0] = np.clip(cam[:, 1], -CAMERA_CLIP_DEG, CAMERA_CLIP_DEG) / CAMERA_CLIP_DEG
    out[:, 1] = np.clip(cam[:, 0], -CAMERA_CLIP_DEG, CAMERA_CLIP_DEG) / CAMERA_CLIP_DEG
    out[:, 2] = window_sum(np.asarray(move_x, np.float64)) / length
    out[:, 3] = window_sum(np.asarray(move_z, np.float64)) / length
    return out.astype(np.float32)


def mouse_counts_to_degrees(dx, dy) -> tuple[np.ndarray, np.ndarray]:
    """Mouse motion in counts -> camera (yaw, pitch) degrees, for recorded (VPT) and live input alike.

    VPT records raw mouse counts and the game turns 0.15 degrees per count (360 / 2400, the
    default sensitivity); live play feeds the same counts (relative mouse motion) through here,
    so a flick turns the dream as far as it turned the recorded players. Right (dx > 0) turns
    right, down (dy > 0) looks down.
    """
    return np.asarray(dx, np.float64) * VPT_DEG_PER_COUNT, np.asarray(dy, np.float64) * VPT_DEG_PER_COUNT


def encode_live(yaw_deg: float, pitch_deg: float, keys: set[str] | frozenset[str]) -> np.ndarray:
    """One model step of live input -> [yaw, pitch, move_x, move_z] in the units above.

    yaw_deg / pitch_deg: total camera rotation since the previous model frame (mouse counts
    converted by `mouse_counts_to_degrees`); keys: held keys among w, a, s, d.
    """
    move_x = float("d" in keys) - float("a" in keys)
    move_z = float("w" in keys) - float("s" in keys)
    return encode_window_actions(
        np.array([[pitch_deg, yaw_deg]]), np.array([move_x]), np.array([move_z]), np.array([0, 1])
    )[0]
