"""Actions into the stepper: validation, live keyboard/mouse input, action files.

Legend: B players; an action is [yaw, pitch, move_x, move_z] in docs/data.md#actions units, each in [-1, 1].

Live input goes through ochre.actions.encode_window_actions, the function `ochre prepare` encodes
recordings with: every display tick is one row (camera degrees turned during it, keys held), and a
model step encodes the window of ticks since the previous step — camera summed (clipped to ±15°,
/15), movement averaged — exactly as prepare does for the 20 Hz ticks between two kept frames.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ochre.actions import ACTIONS, VPT_DEG_PER_COUNT, encode_window_actions

LOOK_DEG_PER_S = 90.0          # arrow keys: a quarter turn per second (11.25° per step at 8 fps)


class ActionGuard:
    """Validates actions into a preallocated float32 (B, 4) buffer; never raises.

    (B, 4) is one action per player, (4,) the same action for every player. NaN / inf -> 0 (that
    player's entry only), out of [-1, 1] -> clamped, a wrong shape or a value that is not a number
    -> the null action for every player (standing still, not turning). Each kind of problem is
    reported once, with what to do, through `report`; `issues` counts them all. `ochre-native`
    reads action files by the same rules (native/ochre_native.cpp).
    """

    def __init__(self, batch: int, report=None):
        self.batch = batch
        self.out = np.zeros((batch, ACTIONS), np.float32)
        self.issues = {"shape": 0, "not_a_number": 0, "nan": 0, "out_of_range": 0}
        self._report = report or (lambda msg: print(f"ochre: {msg}", file=sys.stderr))
        self._said: set[str] = set()

    def _say(self, kind: str, msg: str) -> None:
        self.issues[kind] += 1
        if kind not in self._said:
            self._said.add(kind)
            self._report(f"{msg} (said once; stepper.actions_guard.issues counts every occurrence)")

    def __call__(self, actions) -> np.ndarray:
        try:
            a = np.asarray(actions, dtype=np.float32)
        except (TypeError, ValueError):
            self._say("not_a_number", f"actions must be numbers, got {type(actions).__name__}; using the null action")
            self.out[:] = 0
            return self.out
        if a.shape == (ACTIONS,):
            a = np.broadcast_to(a, (self.batch, ACTIONS))
        if a.shape != (self.batch, ACTIONS):
            self._say("shape", f"actions must have shape ({self.batch}, {ACTIONS}) [yaw, pitch, move_x, move_z], "
                               f"got {a.shape}; using the null action")
            self.out[:] = 0
            return self.out
        bad = ~np.isfinite(a)
        if bad.any():
            self._say("nan", f"non-finite actions for players {sorted(set(np.nonzero(bad)[0].tolist()))}; "
                             "replaced by 0")
        np.copyto(self.out, a)
        self.out[bad] = 0
        if np.abs(self.out).max(initial=0) > 1:
            self._say("out_of_range", "actions outside [-1, 1] (docs/data.md#actions units: yaw and pitch are "
                                      "degrees/15, movement is a key state); clamped")
            np.clip(self.out, -1, 1, out=self.out)
        return self.out


class LiveInput:
    """Keyboard and mouse -> one §3.2 action per model step (see the module doc).

    tick(dt, mouse_dx, mouse_dy, keys) once per display frame: mouse counts since the last tick
    (VPT's 0.15° per count by default; dy > 0 is the mouse moving down = looking down), keys held
    among "w a s d left right up down". action() closes the window and starts the next.
    """

    def __init__(self, deg_per_count: float = VPT_DEG_PER_COUNT, look_deg_per_s: float = LOOK_DEG_PER_S):
        self.deg_per_count, self.look = deg_per_count, look_deg_per_s
        self._rows: list[tuple[float, float, float, float]] = []       # (pitch°, yaw°, move_x, move_z)

    def tick(self, dt: float, mouse_dx: float = 0.0, mouse_dy: float = 0.0, keys=frozenset()) -> None:
        yaw = mouse_dx * self.deg_per_count + self.look * dt * (("right" in keys) - ("left" in keys))
        pitch = mouse_dy * self.deg_per_count + self.look * dt * (("down" in keys) - ("up" in keys))
        self._rows.append((pitch, yaw, float("d" in keys) - float("a" in keys),
                           float("w" in keys) - float("s" in keys)))

    def action(self) -> np.ndarray:
        """float32 (4,) for the ticks since the previous call (the null action if there were none)."""
        if not self._rows:
            return np.zeros(ACTIONS, np.float32)
        rows = np.asarray(self._rows, np.float64)
        self._rows.clear()
        return encode_window_actions(rows[:, :2], rows[:, 2], rows[:, 3], np.array([0, len(rows)]))[0]


def read_action_file(path) -> np.ndarray:
    """docs/data.md#action-files -> float32 (S, 4): one step per line, `yaw pitch move_x move_z`,
    spaces or commas; blank lines and # comments ignored. Raises ValueError naming the line."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        try:
            values = [float(x) for x in text]
        except ValueError:
            raise ValueError(f"{path}:{n}: not numbers: {line.strip()!r}") from None
        if len(values) != ACTIONS:
            raise ValueError(f"{path}:{n}: need 4 numbers (yaw pitch move_x move_z), got {len(values)}")
        rows.append(values)
    if not rows:
        raise ValueError(f"{path}: no actions (one step per line: yaw pitch move_x move_z)")
    return np.asarray(rows, np.float32)
