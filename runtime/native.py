"""The `native` stepper backend: the AOTInductor packages of `ochre export --format aoti`, run
through torch's package loader — the same compiled code that `ochre-native` (C++) runs.

Legend: B players, h w token grid, H W pixels, L ConvGRU layers, C_l their widths.

The Stepper interface of ochre.runtime.stepper (reset/step, ActionGuard, the shared noise rule),
over three packages at static shapes: encode.pt2 (frames -> tokens), step.pt2 (tokens, actions,
noise, state -> next tokens, next state) and decode.pt2 (tokens, view -> frames). Tokens and
state live in tensors allocated once; the packages allocate their outputs, which a step copies
into those buffers (a few tens of KB at batch 1), so the buffers never move; on a GPU they live
there, and only actions, noise in and frames out cross. The noise is the one
every backend draws (ochre.models.step.NOISE), which is also what `ochre-native` draws, so the
same seed and actions give the same frames here, in C++ and, up to near-ties, on every backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ochre.runtime.stepper import Stepper


class NativeStepper(Stepper):
    """reset/step over a folder of AOTInductor packages compiled for this machine (its CPU, or its GPU:
    the folder's manifest says which, and the buffers live there)."""

    backend = "native"

    def __init__(self, folder, *, device: str | None = None, threads: int | None = None, seed: int = 0,
                 guidance: float | None = None, report=None):
        from ochre.export.aoti import PACKAGES, read_manifest
        from ochre.models.precision import strict_fp32

        self.folder = Path(folder)
        self.manifest = m = read_manifest(folder)            # refuses packages made for another machine
        self.dtype, self.device = m.get("dtype", "fp32"), m.get("device", "cpu")
        if device is not None and device != self.device:
            raise ValueError(f"{folder} was compiled for {self.device}, not {device}; "
                             f"`ochre export ... --format aoti --device {device}`")
        if guidance is not None and guidance != m["sampling"]["guidance"]:
            raise ValueError(f"{folder} was compiled with guidance {m['sampling']['guidance']}; re-export with "
                             f"`ochre export ... --format aoti --guidance {guidance}` or use the torch backend")
        super().__init__(m["batch"], m["grid"], seed, report)
        if threads:
            torch.set_num_threads(threads)              # the packages' OpenMP regions follow it
        strict_fp32(self.device)                        # the convolutions a CUDA package calls: fp32, as checked
        self._run = {n: torch._inductor.aoti_load_package(str(self.folder / f"{n}.pt2")) for n in PACKAGES}
        B, g, dev = self.batch, self.grid, self.device
        self.tokens = torch.zeros(B, g, g, dtype=torch.int64, device=dev)                 # (B, h, w)
        self.state = [torch.zeros(B, *s, device=dev) for s in m["state_shapes"]]          # L x (B, C_l, h, w) ...
        self._frames_t = torch.from_numpy(self.frames)                                   # (B, H, W, 3), shared
        self._actions_dev = torch.zeros(B, 4, device=dev)                              # used on a GPU
        self._noise_dev = torch.zeros(B, g, g, device=dev)

    def _reset(self, context: np.ndarray) -> None:
        self.tokens.copy_(self._run["encode"](torch.from_numpy(context).to(self.device)))
        for s in self.state:
            s.zero_()
        self._frames_t.copy_(self._run["decode"](self.tokens, self.state[-1]))

    def _reset_players(self, rows: np.ndarray, context: np.ndarray) -> None:
        idx = torch.from_numpy(rows)
        self.tokens[idx] = self._run["encode"](torch.from_numpy(context))[idx]        # packages: batch B only
        for s in self.state:
            s[idx] = 0
        self._frames_t[idx] = self._run["decode"](self.tokens, self.state[-1])[idx]

    def _step(self, actions: np.ndarray, noise: np.ndarray) -> None:
        a, u = torch.from_numpy(actions), self._noise_t
        if self.device != "cpu":                        # the inputs' one trip to the GPU
            a, u = self._actions_dev.copy_(a), self._noise_dev.copy_(u)
        nxt, *state = self._run["step"](self.tokens, a, u, *self.state)
        self.tokens.copy_(nxt)
        for buf, s in zip(self.state, state):
            buf.copy_(s)
        self._frames_t.copy_(self._run["decode"](self.tokens, self.state[-1]))     # the one sync: frames to host

    def rollout(self, context: np.ndarray, actions) -> tuple[np.ndarray, np.ndarray]:
        """context (B, H, W, 3), actions (S, 4) (every player) or (S, B, 4) -> frames uint8
        (S+1, B, H, W, 3) and tokens int64 (S+1, B, h, w): what `ochre-native` writes for the same
        inputs and seed, from a stepper that has not stepped since its seed was set."""
        frames, tokens = [self.reset(context).copy()], [self.tokens.clone()]
        for a in actions:
            frames.append(self.step(a).copy())
            tokens.append(self.tokens.clone())
        return np.stack(frames), torch.stack(tokens).numpy()
