"""A gymnasium Env over the stepper: `gymnasium.make("ochre/Dream-v0")`.

Observation: the dreamed frame, uint8 (64, 64, 3). Action: Box(-1, 1, (4,)) float32,
[yaw, pitch, move_x, move_z] in docs/data.md#actions units. reset(seed=...) picks a context frame (from the
model's real frames) with the seeded np_random and restarts the dream from it; the same seed also
seeds the sampling noise, so a seeded episode replays exactly. A dream has no reward and never
terminates; `max_episode_steps` (default 256) truncates it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "ochre/Dream-v0"


class DreamEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, checkpoint=None, backend: str = "torch", onnx_dir=None, aoti_dir=None, device: str = "cpu",
                 render_mode: str | None = None, stepper=None, contexts: np.ndarray | None = None):
        """checkpoint: a world-model run (default: newest `ochre demo`, else the shipped model), played
        by `backend` (an exported one runs onnx_dir / aoti_dir, else an export made on demand);
        or pass a ready `stepper` (batch 1) and its `contexts` (N, 64, 64, 3)."""
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if stepper is None:
            from ochre.models.lookup import resolve
            from ochre.runtime.exports import ensure_for
            from ochre.runtime.stepper import make_stepper

            model = resolve(checkpoint)
            folder = aoti_dir if backend == "native" else onnx_dir
            folder = folder or ensure_for(backend, model, 1, device=device)
            stepper = make_stepper(backend, model, onnx_dir=folder, aoti_dir=folder, device=device)
            contexts = model.context_frames() if contexts is None else contexts
            self.metadata = {**self.metadata, "render_fps": model.fps}
        if stepper.batch != 1:
            raise ValueError(f"DreamEnv runs one player; the stepper has batch {stepper.batch}")
        if contexts is None or len(contexts) == 0:
            raise ValueError("DreamEnv needs context frames (N, 64, 64, 3)")
        self.stepper, self.contexts, self.render_mode = stepper, np.asarray(contexts, np.uint8), render_mode
        self.observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._frame = np.zeros((64, 64, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        index = int(self.np_random.integers(len(self.contexts)))
        if options and "context" in options:
            index = int(options["context"]) % len(self.contexts)
        self.stepper.seed(int(self.np_random.integers(2**63 - 1)))
        self._frame = self.stepper.reset(self.contexts[index][None])[0].copy()
        return self._frame, {"context": index}

    def step(self, action):
        self._frame = self.stepper.step(np.asarray(action, np.float32)[None])[0].copy()
        return self._frame, 0.0, False, False, {}

    def render(self):
        return self._frame.copy() if self.render_mode == "rgb_array" else None


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="ochre.runtime.env:DreamEnv", max_episode_steps=256)
