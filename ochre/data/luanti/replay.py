"""Put the game back at a recorded pose and play given actions: the game's own frames for them.

This is what a ground-truth comparison needs (the synthetic world's renderer plays the same role for
its tours): from a pose in a recording's lines, the frames the real game draws for any actions.
The player stands at the pose exactly (position and look); the world is the same map seed, at the
same still noon; clouds drift and each step lasts what the machine gives it, so a replayed frame
matches the recorded one closely, not bit for bit. Legend: N steps.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ochre.data.luanti.episode import KEYSYMS, Recorded, drive, put
from ochre.data.luanti.game import Game
from ochre.data.synth.writers import VPT_KEYS

_NAMES = {key: name for name, key in VPT_KEYS.items() if name in KEYSYMS}    # the keys the recorder presses


def recorded_actions(jsonl: str | Path) -> tuple[list[dict], np.ndarray, list[frozenset[str]]]:
    """A Luanti recording's poses (N + 1), mouse counts (N, 2) [dy, dx] and keys (N) from NAME.jsonl."""
    lines = [json.loads(line) for line in Path(jsonl).read_text().splitlines()]
    counts = np.array([[line["mouse"]["dy"], line["mouse"]["dx"]] for line in lines[:-1]], np.int64)
    keys = [frozenset(_NAMES[k] for k in line["keyboard"]["keys"] if k in _NAMES) for line in lines[:-1]]
    return [line["pose"] for line in lines], counts, keys


def replay(game: Game, pose: dict, counts: np.ndarray, keys: list[frozenset[str]]) -> Recorded:
    """Put the player at `pose` ({x, y, z, yaw, pitch}) and play N steps of mouse counts (N, 2)
    [dy, dx] and held keys; returns the N + 1 frames and poses the game drew."""
    _, first = put(game, f"replay-{time.monotonic_ns()}", pose)
    counts = np.asarray(counts, np.int64)
    return drive(game, len(counts), lambda t, _: (keys[t], int(counts[t, 0]), int(counts[t, 1])), first)
