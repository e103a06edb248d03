"""What the recorded player does: `ochre synth`'s balanced behaviours, plus jumping as players do.

The camera and the movement keys come from ochre.data.synth.policy unchanged (turn, look, walk every
way, walk and turn, look around, stand still), in whole VPT mouse counts. A real block world adds
what the synthetic one lacks: one-node steps that stop a walker, and water. So the player also
jumps: to swim up while in water, when walking has stalled against a step, and now and then while
walking. Those decisions read the game's pose log, so they are made online, step by step.
Legend: N steps.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ochre.actions import VPT_DEG_PER_COUNT
from ochre.data.luanti.labels import Pose
from ochre.data.synth.policy import Actions, policy

WALK_KEYS = ("forward", "back", "left", "right")
STALL_STEPS = 4             # steps of walking that moved the player less than STALL_NODES
STALL_NODES = 0.25          # walking covers ~0.8 nodes in 4 steps (4 nodes/s)
HOP_STEPS = 6               # jump held this long: one jump (~0.3 s) and the landing
HOP_CHANCE = 1 / 80         # per walking step: a hop every ~4 s of walking


@dataclass(frozen=True)
class Plan:
    counts: np.ndarray              # (N, 2) int64 mouse counts [dy, dx]
    walk: list[frozenset[str]]      # (N,) movement keys held at each step


def plan(rng: np.random.Generator, steps: int, pitch0: float) -> Plan:
    """The synth policy's camera (whole counts) and movement keys for one episode."""
    actions: Actions = policy(rng, steps, pitch0=pitch0, quantum=VPT_DEG_PER_COUNT)
    counts = np.round(actions.camera / VPT_DEG_PER_COUNT).astype(np.int64)
    walk = [frozenset(k for k in WALK_KEYS if actions.keys[k][t]) for t in range(steps)]
    return Plan(counts, walk)


def player(plan: Plan, hops: Hops) -> Callable[[int, Pose], tuple[frozenset[str], int, int]]:
    """The recorded player: the plan's keys and camera at step t, plus jump when `hops` says so."""
    def decide(t: int, pose: Pose) -> tuple[frozenset[str], int, int]:
        jump = frozenset({"jump"}) if hops(pose, plan.walk[t]) else frozenset()
        return plan.walk[t] | jump, int(plan.counts[t, 0]), int(plan.counts[t, 1])
    return decide


class Hops:
    """Decides, step by step from the poses seen so far, whether jump is held next."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.left = 0                                   # steps of the current jump still to hold
        self.recent: deque[tuple[float, float, bool]] = deque(maxlen=STALL_STEPS + 1)

    def __call__(self, pose: Pose, walk: frozenset[str]) -> bool:
        self.recent.append((pose.x, pose.z, bool(walk)))
        if pose.liquid:
            return True
        if self.left == 0 and walk:
            stalled = len(self.recent) > STALL_STEPS and all(w for _, _, w in self.recent) and \
                np.hypot(self.recent[-1][0] - self.recent[0][0], self.recent[-1][1] - self.recent[0][1]) < STALL_NODES
            if stalled or self.rng.random() < HOP_CHANCE:
                self.left = HOP_STEPS
        if self.left:
            self.left -= 1
            return True
        return False
