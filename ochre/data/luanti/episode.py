"""One recorded episode: place the player, then drive the game in lockstep with its own steps.

The game runs at 20 steps a second (fps_max); each step reads the input, moves the player, logs
the pose (client-side mod) and draws a frame numbered in its top strip. For every step s:
  1. the pose line of step s arrives;
  2. the input for step s + 1 is sent at once (keys down/up and a relative mouse move), well before
     the game reads input again (~50 ms later);
  3. the window is read until it shows frame s (the number in the strip), which is then frame t of
     the recording, with the pose of step s.
So frame t and pose t are the same step by construction, and the action between frames t and t+1 is
what step s + 1 did, read from its pose line (ochre.data.luanti.labels). A frame that was never seen
(on a busy machine the game drew step s + 1 before step s was read) is skipped: the next frame's
transition then spans two steps, labelled from both (ochre.data.luanti.labels.labels).
Legend: N steps (transitions), H W picture size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ochre.data.luanti.game import Game, GameError
from ochre.data.luanti.labels import Pose
from ochre.data.luanti.marker import frame_number, picture, steps_ahead
from ochre.data.luanti.x11 import X11Error

KEYSYMS = {"forward": "w", "back": "s", "left": "a", "right": "d", "jump": "space"}
# 4 s after arriving: the player lands, the client meshes the new blocks, and the sky's brightness,
# which the game eases toward what the view holds (~5 % a frame), has mostly caught up.
SETTLE_STEPS = 80
PLACE_TIMEOUT_S = 300.0     # generating the map around a new start (~2-12 s on 2 cores)
FRAME_TIMEOUT_S = 5.0       # one step's frame; the game cuts a step at 0.5 s, so longer is a hang
POLL_S = 0.002


class NoLand(Exception):
    """The server-side mod found no dry land near the asked point (an ocean); another point may do."""


@dataclass
class Recorded:
    frames: list[np.ndarray] = field(default_factory=list)        # N + 1 pictures (H, W, 3)
    poses: list[Pose] = field(default_factory=list)                # N + 1
    passed: list[list[Pose]] = field(default_factory=list)         # N + 1: steps without a frame before each
    sent_counts: list[tuple[int, int]] = field(default_factory=list)   # N [dy, dx], sent after frame t
    sent_keys: list[frozenset[str]] = field(default_factory=list)      # N


class Input:
    """Keys and mouse of one game window, with the held keys remembered."""

    def __init__(self, game: Game):
        self.display = game.display
        self.codes = {name: self.display.keycode(sym) for name, sym in KEYSYMS.items()}
        self.held: set[str] = set()

    def send(self, keys: frozenset[str], dy: int, dx: int) -> None:
        for name in self.held - keys:
            self.display.key(self.codes[name], False)
        for name in keys - self.held:
            self.display.key(self.codes[name], True)
        self.held = set(keys)
        if dx or dy:
            self.display.move_mouse(dx, dy)
        self.display.flush()

    def release(self) -> None:
        self.send(frozenset(), 0, 0)


def next_pose(game: Game, timeout_s: float = FRAME_TIMEOUT_S) -> Pose:
    """The next pose line, skipping the server-side mod's lines."""
    deadline = time.monotonic() + timeout_s
    while True:
        kind, fields = game.next_line(max(0.1, deadline - time.monotonic()))
        if kind == "ochre_pose":
            return Pose.parse(fields)


def place(game: Game, tag: str, x: float, z: float, yaw: float, pitch: float) -> tuple[dict, Pose]:
    """Ask the server-side mod to put the player on dry land near (x, z), looking (yaw, pitch); wait
    until the client stands there and SETTLE_STEPS more steps have passed. Returns (where, the last pose)."""
    return _placed(game, tag, f"{tag} near {x:.1f} {z:.1f} {yaw:.4f} {pitch:.4f}")


def put(game: Game, tag: str, pose: dict) -> tuple[dict, Pose]:
    """Put the player back at a recorded pose ({x, y, z, yaw, pitch}, as in the lines' "pose"), exactly;
    then as `place`."""
    p = pose
    return _placed(game, tag, f"{tag} at {p['x']:.4f} {p['y']:.4f} {p['z']:.4f} {p['yaw']:.5f} {p['pitch']:.5f}")


def _placed(game: Game, tag: str, command: str) -> tuple[dict, Pose]:
    game.write_command(command)
    deadline = time.monotonic() + PLACE_TIMEOUT_S
    where = None
    while True:
        if time.monotonic() > deadline:
            raise GameError(f"the game did not place the player within {PLACE_TIMEOUT_S:.0f} s ({command})")
        kind, fields = game.next_line(max(0.1, deadline - time.monotonic()))
        if kind == "ochre_unplaced" and fields[:1] == [tag]:
            raise NoLand(f"no dry land within ~200 nodes of ({command.split()[2]}, {command.split()[3]})")
        if kind == "ochre_placed" and fields[:1] == [tag]:
            where = dict(zip(("x", "y", "z"), map(float, fields[1:4])))
        if where is not None and kind == "ochre_pose":                 # the client follows a step or two later
            pose = Pose.parse(fields)
            if abs(pose.x - where["x"]) < 1.0 and abs(pose.z - where["z"]) < 1.0:
                break
    for _ in range(SETTLE_STEPS):
        pose = next_pose(game)
    return where, pose


def grab_frame(game: Game, pose: Pose) -> tuple[np.ndarray, Pose, list[Pose]]:
    """The picture of the step of `pose` once the window shows it -> (picture, its pose, []).

    When the window already shows a later step (the recorder was slower than one step, as on a busy
    machine), that frame is lost: the later step's picture is taken instead, with its pose, and the
    poses of the steps passed over come third."""
    cfg = game.cfg
    w, h = cfg.window
    passed: list[Pose] = []
    deadline = time.monotonic() + FRAME_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            window = game.display.grab(game.window, 0, 0, w, h)
        except X11Error as e:
            game.check_alive()
            raise GameError(str(e)) from None
        shown = frame_number(window, cfg.strip, cfg.marker_bits)
        ahead = steps_ahead(shown, pose.step, cfg.marker_bits)
        if ahead == 0:
            return picture(window, cfg.strip).copy(), pose, passed
        if ahead < 0:                                   # not drawn yet
            time.sleep(POLL_S)
            continue
        for _ in range(ahead):                          # the shown step's pose line is logged already
            passed.append(pose)
            pose = next_pose(game)
    game.check_alive()
    raise GameError(f"the window did not show step {pose.step} within {FRAME_TIMEOUT_S:.0f} s")


# What to send for step t, given the pose just logged: (keys held, dy, dx mouse counts).
Decide = Callable[[int, Pose], tuple[frozenset[str], int, int]]


def drive(game: Game, steps: int, decide: Decide, first: Pose) -> Recorded:
    """Run N = `steps` steps from pose `first` (the step just logged); returns N + 1 frames and poses,
    and for each frame the steps passed over before it (usually none)."""
    inputs = Input(game)
    rec = Recorded()
    pose = first
    try:
        for t in range(steps + 1):
            if t < steps:
                keys, dy, dx = decide(t, pose)
                inputs.send(keys, dy, dx)
                rec.sent_counts.append((dy, dx))
                rec.sent_keys.append(keys)
            frame, pose, passed = grab_frame(game, pose)
            rec.frames.append(frame)
            rec.poses.append(pose)
            rec.passed.append(passed)
            if t < steps:
                pose = next_pose(game)
    finally:
        inputs.release()
    return rec
