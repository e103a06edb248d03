"""The `native` stepper backend: the AOTInductor packages of `ochre export --format aoti`, run
through torch's package loader — the same compiled code that `ochre-native` (C++) runs.

Legend: B players, h w token grid, H W pixels, L ConvGRU layers, C_l their widths.

reset(context_frames uint8 (B, H, W, 3)) -> frames uint8 (B, H, W, 3): encode the context, zero
the state, reseed the noise; step(actions fp32 (B, 4)) -> frames: one dreamed frame. Tokens,
state and noise live in buffers allocated once at the packages' static shapes; a step is two
package calls and copies into those buffers, with no host sync of its own. The noise is
ochre.export.aoti.NOISE (the C++ loop draws the same numbers), so the same seed and actions
give the same frames in Python and in `ochre-native`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

PACKAGES = ("encode", "step", "decode")


def read_shapes(folder) -> dict[str, list]:
    """shapes.txt of a package folder -> {"batch": [B], "grid": [h], "frame": [H, W, 3], "state": [[C, h, w], ...]}."""
    path = Path(folder) / "shapes.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} the output of `ochre export --format aoti`?")
    shapes: dict[str, list] = {"state": []}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, *dims = line.split()
            if name == "state":
                shapes["state"].append([int(d) for d in dims])
            else:
                shapes[name] = [int(d) for d in dims]
    return shapes


def read_actions(path) -> np.ndarray:
    """An action file (DESIGN §7: one step a line, `yaw pitch move_x move_z` separated by spaces or
    commas, blank lines and # comments ignored) -> float32 (S, 4)."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f for f in re.split(r"[,\s]+", text) if f]
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ValueError(f"{path}:{n}: expected 4 numbers `yaw pitch move_x move_z`, got {text!r}")
        rows.append(values)
    return np.asarray(rows, np.float32).reshape(-1, 4)


def clean_actions(actions, batch: int) -> torch.Tensor:
    """actions (B, 4) or (4,) for every player -> fp32 (B, 4): NaN becomes 0 and values are
    clamped to the §3.2 range [-1, 1], so one bad input never stops the loop. A wrong shape is an
    error, since no row of it can be trusted."""
    a = torch.as_tensor(actions, dtype=torch.float32)
    if a.shape == (4,):
        a = a.expand(batch, 4)
    if a.shape != (batch, 4):
        raise ValueError(f"actions must be ({batch}, 4) [yaw, pitch, move_x, move_z] or (4,), got {tuple(a.shape)}")
    return torch.nan_to_num(a, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)


class NativeStepper:
    """reset/step over a folder of AOTInductor packages (CPU, or the GPU they were compiled for)."""

    def __init__(self, folder, seed: int = 0):
        self.folder, self.seed = Path(folder), seed
        shapes = read_shapes(folder)
        self.batch, g = shapes["batch"][0], shapes["grid"][0]
        self.frame_shape = tuple(shapes["frame"])
        load = torch._inductor.aoti_load_package
        self._encode, self._step, self._decode = (load(str(self.folder / f"{n}.pt2")) for n in PACKAGES)
        self.tokens = torch.zeros(self.batch, g, g, dtype=torch.int64)                    # (B, h, w)
        self.noise = torch.zeros(self.batch, g, g)                                        # (B, h, w)
        self.state = [torch.zeros(self.batch, *s) for s in shapes["state"]]               # L x (B, C_l, h, w)
        self.gen = torch.Generator()

    def reset(self, context_frames) -> np.ndarray:
        frames = torch.as_tensor(np.ascontiguousarray(context_frames))
        if frames.dtype != torch.uint8 or tuple(frames.shape) != (self.batch, *self.frame_shape):
            raise ValueError(f"context frames must be uint8 {(self.batch, *self.frame_shape)}, got "
                             f"{frames.dtype} {tuple(frames.shape)}")
        self.gen.manual_seed(self.seed)
        self.tokens.copy_(self._encode(frames))
        for s in self.state:
            s.zero_()
        return self._decode(self.tokens).numpy()

    def step(self, actions) -> np.ndarray:
        a = clean_actions(actions, self.batch)
        torch.rand(self.noise.shape, generator=self.gen, out=self.noise)
        tokens, _, *state = self._step(self.tokens, a, self.noise, *self.state)
        self.tokens.copy_(tokens)
        for s, new in zip(self.state, state):
            s.copy_(new)
        return self._decode(self.tokens).numpy()

    def rollout(self, context_frames, actions) -> tuple[np.ndarray, np.ndarray]:
        """context (B, H, W, 3), actions (S, 4) or (S, B, 4) -> frames uint8 (S+1, B, H, W, 3) and
        tokens int64 (S+1, B, h, w); what `ochre-native` writes for the same inputs."""
        frames, tokens = [self.reset(context_frames)], [self.tokens.clone()]
        for a in actions:
            frames.append(self.step(a))
            tokens.append(self.tokens.clone())
        return np.stack(frames), torch.stack(tokens).numpy()
