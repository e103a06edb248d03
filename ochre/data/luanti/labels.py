"""Labels from the engine's own pose log: what the game did between two recorded frames.

Each recorded frame is one game step, and the client-side mod logs that step's pose and the controls
the game applied in it. The action between frames t and t+1 is therefore read off steps t and t+1:
the camera is the change of look angle (in VPT mouse counts, 0.15 degrees each), the keys are the
controls of step t+1. What the recorder sent is kept beside it, to measure how often the game did
exactly that. A change of look that is not a whole number of counts (the game clamped or set the
view itself) cannot be written as a mouse line: the episode is cut before it.
Legend: N transitions, N + 1 frames (poses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ochre.actions import VPT_DEG_PER_COUNT
from ochre.data.synth.policy import KEY_NAMES

CONTROLS = {"w": "forward", "a": "left", "s": "back", "d": "right", "j": "jump", "c": "sneak"}
WHOLE_COUNT_TOL = 0.01      # counts; the engine's float32 angles leave ~3e-4 counts of rounding
MATCH_DEG = 0.5             # a sent camera move counts as done within this many degrees


@dataclass(frozen=True)
class Pose:
    """One game step as the client-side mod logged it (mods/ochre_pose/init.lua)."""
    step: int
    dtime: float            # seconds the step simulated
    x: float                # feet position, nodes
    y: float
    z: float
    yaw: float              # degrees, the angle set_look_horizontal takes: 0 faces +z, growing to the left
    pitch: float            # degrees, positive looks down
    keys: frozenset[str]    # KEY_NAMES held in this step
    liquid: bool            # the player is in water (or lava)

    @classmethod
    def parse(cls, fields: list[str]) -> Pose:
        """From the mod's fields: step dtime x y z look_horizontal_deg pitch_deg controls liquid."""
        step, dtime, x, y, z, look, pitch, controls, liquid = fields
        keys = frozenset(name for letter, name in CONTROLS.items() if letter in controls)
        # The client reports look_horizontal 90 degrees ahead of what the server's setter takes.
        return cls(int(step), float(dtime), float(x), float(y), float(z), (float(look) - 90.0) % 360.0,
                   float(pitch), keys, liquid == "1")

    def as_json(self) -> dict:
        return {"x": round(self.x, 4), "y": round(self.y, 4), "z": round(self.z, 4),
                "yaw": round(self.yaw, 5), "pitch": round(self.pitch, 5)}


@dataclass(frozen=True)
class Labels:
    camera: np.ndarray              # (N, 2) degrees [pitch, yaw], whole counts; positive yaw turns right
    keys: dict[str, np.ndarray]     # KEY_NAMES -> (N,) uint8, the controls the game applied
    cut: tuple[int, str] | None     # (transition index, reason): frames after it are dropped


def camera_counts(poses: list[Pose]) -> np.ndarray:
    """Look changes between consecutive poses in mouse counts: (N, 2) float [dy, dx], dx > 0 turns right."""
    yaw = np.array([p.yaw for p in poses])
    pitch = np.array([p.pitch for p in poses])
    turn = (np.diff(yaw) + 180.0) % 360.0 - 180.0                          # (N,) to the left
    return np.stack([np.diff(pitch), -turn], axis=1) / VPT_DEG_PER_COUNT


def labels(poses: list[Pose], passed: list[list[Pose]] | None = None) -> Labels:
    """The actions between consecutive frames' poses (N + 1); passed[t]: the steps without a frame
    just before frame t (default none), whose controls the transition into frame t must share.

    The episode is cut before the first transition that cannot be written as one VPT line: a look
    change that is not whole counts, or keys that changed within a transition spanning several steps.
    """
    passed = passed or [[] for _ in poses]
    counts = camera_counts(poses)                                          # (N, 2)
    whole = np.abs(counts - np.round(counts)).max(axis=1, initial=0.0) <= WHOLE_COUNT_TOL
    steady = np.array([len({p.keys for p in passed[t + 1] + [poses[t + 1]]}) == 1 for t in range(len(counts))],
                      bool)
    cut = None
    n = len(counts)
    if not (whole & steady).all():
        n = int(np.argmin(whole & steady))
        if not whole[n]:
            worst = counts[n] - np.round(counts[n])
            why = (f"look changed by {counts[n].round(3).tolist()} counts, not whole counts "
                   f"(off by {np.abs(worst).max():.3f}): the game turned the view itself")
        else:
            why = (f"the keys changed within the {len(passed[n + 1]) + 1} steps before frame {n + 1}, whose "
                   "frames were drawn over before they were read")
        cut = (n, why)
    camera = np.round(counts[:n]) * VPT_DEG_PER_COUNT
    keys = {name: np.array([name in p.keys for p in poses[1:n + 1]], np.uint8) for name in KEY_NAMES}
    return Labels(camera, keys, cut)


def agreement(poses: list[Pose], passed: list[list[Pose]], sent_counts: np.ndarray,
              sent_keys: list[frozenset[str]]) -> dict:
    """How often the game did what was sent, over the N transitions that span one step (sent_counts
    (N, 2) [dy, dx] and sent_keys: what was sent after each frame; passed as in `labels`).

    camera_exact: the look changed by exactly the counts sent; camera_within: within MATCH_DEG on both
    axes; keys: the controls of the step equal the keys sent; multi_step: transitions left out because
    frames were lost in them (their labels are what the game did over all their steps).
    """
    n = min(len(poses) - 1, len(sent_counts))
    single = [t for t in range(n) if not passed[t + 1] and not (t == 0 and passed[0])]
    if not single:
        return {"transitions": n, "multi_step": n - len(single)}
    done = camera_counts(poses[:n + 1])[single]
    err = np.abs(done - np.asarray(sent_counts)[single]) * VPT_DEG_PER_COUNT     # (S, 2) degrees
    keys = np.mean([poses[t + 1].keys == sent_keys[t] for t in single])
    return {"transitions": n, "multi_step": n - len(single), "camera_exact": float(np.mean(err.max(axis=1) < 1e-3)),
            "camera_within": float(np.mean(err.max(axis=1) <= MATCH_DEG)), "keys": float(keys)}


def label_accuracy(camera: np.ndarray, poses: list[dict]) -> float:
    """Share of transitions whose camera label, (N, 2) degrees [pitch, yaw], is within MATCH_DEG of
    the change between the written poses ({"yaw", "pitch"} dicts, N + 1): a check of a file as written."""
    counts = camera_counts([Pose(0, 0.0, 0.0, 0.0, 0.0, p["yaw"], p["pitch"], frozenset(), False) for p in poses])
    err = np.abs(counts * VPT_DEG_PER_COUNT - camera)
    return float(np.mean(err.max(axis=1) <= MATCH_DEG)) if len(err) else 1.0
