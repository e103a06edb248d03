"""`policy(rng, steps)`: a structured random player at 20 Hz.

Balanced behaviour segments (turn, look, walk every way, walk+turn, look around, stand still),
camera [pitch, yaw] degrees per tick; looks drift back to level, as people play.
Legend: N ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PITCH_LIMIT_DEG = 60.0      # the policy keeps |pitch| within this; the renderer never clips
LEVEL_PER_TICK = 0.03       # share of the pitch the player takes back each tick (half-life ~1.2 s)
MAX_YAW_DEG, MAX_PITCH_DEG = 6.0, 3.0   # per tick
SEGMENT_TICKS = (5, 40)

KEY_NAMES = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")
BEHAVIOURS = ("still", "turn_left", "turn_right", "look_up", "look_down", "look_around",
              "forward", "back", "strafe_left", "strafe_right", "diagonal", "walk_turn")
# Held movement keys of each walking behaviour; "diagonal" picks one of four pairs.
_WALK_KEYS = {"forward": ("forward",), "back": ("back",), "strafe_left": ("left",),
              "strafe_right": ("right",), "walk_turn": ("forward",)}
_DIAGONALS = (("forward", "left"), ("forward", "right"), ("back", "left"), ("back", "right"))


@dataclass(frozen=True)
class Actions:
    camera: np.ndarray              # (N, 2) float64 degrees per tick, [pitch, yaw]
    keys: dict[str, np.ndarray]     # every name in KEY_NAMES -> (N,) uint8 in {0, 1}
    behaviour: np.ndarray           # (N,) int8, index into BEHAVIOURS


def _camera_rates(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    """Camera rates (n, 2) [pitch, yaw] for one segment: ramp up, cruise with jitter, ramp down."""
    pitch = yaw = 0.0
    if name in ("turn_left", "turn_right"):
        yaw = rng.uniform(1.5, MAX_YAW_DEG) * (1.0 if name == "turn_right" else -1.0)
    elif name in ("look_up", "look_down"):
        pitch = rng.uniform(0.75, MAX_PITCH_DEG) * (1.0 if name == "look_down" else -1.0)
    elif name == "look_around":
        pitch = rng.uniform(0.5, 2.5) * rng.choice([-1.0, 1.0])
        yaw = rng.uniform(1.0, 5.0) * rng.choice([-1.0, 1.0])
    elif name == "walk_turn":
        yaw = rng.uniform(1.0, 4.0) * rng.choice([-1.0, 1.0])
    ramp = max(1, min(4, n // 4))
    ticks = np.arange(n)
    envelope = np.minimum(1.0, np.minimum(ticks + 1, n - ticks) / ramp)
    profile = envelope * (1.0 + 0.15 * rng.standard_normal(n))              # smooth-ish, not constant
    rates = np.stack([pitch * profile, yaw * profile], axis=1)
    return np.clip(rates, [-MAX_PITCH_DEG, -MAX_YAW_DEG], [MAX_PITCH_DEG, MAX_YAW_DEG])


def _keep_pitch(rates: np.ndarray, pitch: float, quantum: float | None,
                level: float = LEVEL_PER_TICK) -> tuple[np.ndarray, float]:
    """Add the pull back to level, round to whole `quantum`s (mouse counts) if given, and stop
    pitch at ±PITCH_LIMIT_DEG, tick by tick (the pull depends on the pitch reached).

    People play looking ahead: each tick the player brings the view `level` of the way back to the
    horizon, so a look up or down is brief unless it keeps pushing. The policy, not the renderer,
    enforces all of it, so recorded actions are exactly what the frames show. Returns the
    segment's camera (n, 2) and the pitch after it.
    """
    camera = rates.copy()
    for i in range(len(camera)):
        rate = np.clip(camera[i, 0] - level * pitch, -MAX_PITCH_DEG, MAX_PITCH_DEG)
        if quantum is not None:
            rate = round(rate / quantum) * quantum
            camera[i, 1] = round(camera[i, 1] / quantum) * quantum
        after = pitch + rate
        if abs(after) > PITCH_LIMIT_DEG:
            room = math.copysign(PITCH_LIMIT_DEG, after) - pitch
            rate = room if quantum is None else math.trunc(room / quantum) * quantum
        camera[i, 0] = rate
        pitch += rate
    return camera, pitch


def policy(rng: np.random.Generator, steps: int, *, pitch0: float = 0.0,
           quantum: float | None = None) -> Actions:
    """A structured random player: behaviour segments of 5-40 ticks drawn uniformly from BEHAVIOURS.

    Uniform behaviours keep the mix balanced (the old prototype's data was mostly "forward", and
    its model learned little else). Vertical looks keep the pitch within ±60° and drift back to
    level (`_keep_pitch`): about 9 frames in 10 keep the horizon in view (`horizon_share`).
    quantum: round camera to multiples of it (VPT mouse counts: VPT_DEG_PER_COUNT).
    """
    camera = np.zeros((steps, 2))
    keys = {name: np.zeros(steps, np.uint8) for name in KEY_NAMES}
    behaviour = np.zeros(steps, np.int8)
    t, pitch = 0, pitch0
    while t < steps:
        n = min(int(rng.integers(SEGMENT_TICKS[0], SEGMENT_TICKS[1] + 1)), steps - t)
        name = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
        rates = _camera_rates(rng, name, n)
        # A look away from the horizon turns back if it would pass the limit, and more often the
        # further the view already is from level (players mostly look ahead; sky-only frames are dull).
        sweep, chance = rates[:, 0].sum(), rng.random()
        if sweep * pitch > 0 and (abs(pitch + sweep) > PITCH_LIMIT_DEG or chance < abs(pitch) / PITCH_LIMIT_DEG):
            rates[:, 0] *= -1.0
            name = {"look_up": "look_down", "look_down": "look_up"}.get(name, name)
        camera[t:t + n], pitch = _keep_pitch(rates, pitch, quantum)
        held = _DIAGONALS[int(rng.integers(4))] if name == "diagonal" else _WALK_KEYS.get(name, ())
        for key in held:
            keys[key][t:t + n] = 1
        behaviour[t:t + n] = BEHAVIOURS.index(name)
        t += n
    return Actions(camera, keys, behaviour)


def action_mix(behaviour: np.ndarray) -> dict[str, float]:
    """Fraction of ticks spent in each behaviour."""
    counts = np.bincount(behaviour, minlength=len(BEHAVIOURS))
    return {name: float(c) / max(1, len(behaviour)) for name, c in zip(BEHAVIOURS, counts)}
