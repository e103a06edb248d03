"""The live stepper (docs/runtime.md): context frames in, then one dreamed frame per action, for B players.

Legend: B players, h w token grid (16), H W pixels (64), L ConvGRU layers, C_l their widths.

    stepper.reset(context)  uint8 (B, H, W, 3)          -> frames uint8 (B, H, W, 3) (decoded context)
    stepper.reset_player(i, frame)  uint8 (H, W, 3)     -> frames; player i restarts, the others go on
    stepper.reset_player([i, j], frames)  uint8 (2, H, W, 3): both in one batched encode
    stepper.step(actions)   float32 (B, 4), §3.2 units  -> frames uint8 (B, H, W, 3)

Backends: "torch" (eager, inference_mode), "compiled" (torch.compile; CUDA graphs on a GPU),
"onnxruntime" (an `ochre export` folder; CPU, or CUDA with IOBinding), "tensorrt" (engines built by
`ochre export --format tensorrt`), "native" (the AOTInductor packages of `ochre export --format
aoti`, ochre.runtime.native). Every backend holds its tokens and state in buffers allocated once,
at a fixed batch, and takes its sampling noise by the rule of ochre.models.step.NOISE (a torch CPU
generator seeded at construction or by seed(), one torch.rand((B, h, w)) draw per step: the numbers
`ochre eval` and `ochre-native` draw too), so backends fed the same seed and actions dream the same
frames (up to near-ties, export/ties.py). Every backend runs ochre.models.step.live_step, eager or
as a compiled or exported graph (docs/runtime.md#the-stepper). A step has no host sync
and no value-dependent branch until the frames come back to the host at its end.
A reset of one player (a server's player restarting or joining) encodes a whole batch, since the
exported encoders have a static batch, and writes only that player's tokens, state and frame: the
others' dreams, and the noise stream, go on as if nothing happened.
Actions pass through ActionGuard first: bad ones are fixed and reported, never raised.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ochre.choices import BACKENDS
from ochre.models.precision import PRECISIONS, in_dtype, strict_fp32
from ochre.models.step import draw_noise, live_step, noise_generator, render
from ochre.runtime.actions import ActionGuard

# Precisions of the convolutions and linear layers a backend can run (the rest of a step stays fp32):
# torch and compiled convert the model at load, native and the ONNX backends run what was exported.
DTYPES = tuple(PRECISIONS)
EXPORTED = {"onnxruntime": "onnx", "tensorrt": "onnx", "native": "aoti"}   # backend -> export format it runs
FRAME = (64, 64, 3)


class Stepper:
    """The interface and the host-side parts every backend shares (guard, noise, buffers)."""

    backend = "?"
    dtype = "fp32"

    def __init__(self, batch: int, grid: int, seed: int = 0, report=None):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.batch, self.grid = batch, grid
        self.actions_guard = ActionGuard(batch, report)
        self._use_noise(np.zeros((batch, grid, grid), np.float32))               # (B, h, w)
        self.frames = np.zeros((batch, *FRAME), np.uint8)                         # (B, H, W, 3)
        self.seed(seed)

    def seed(self, seed: int) -> None:
        """Restart the noise stream (ochre.models.step.NOISE): the same seed, the same dream."""
        self._gen = noise_generator(seed)

    def _use_noise(self, buffer: np.ndarray) -> None:
        """Draw each step's noise straight into `buffer` (a backend's input buffer): no copy."""
        self.noise, self._noise_t = buffer, torch.from_numpy(buffer)

    def reset(self, context: np.ndarray) -> np.ndarray:
        """Start every player's dream from a context frame: uint8 (B, H, W, 3) (or (H, W, 3) for all)."""
        context = np.asarray(context)
        if context.shape == FRAME:
            context = np.broadcast_to(context, (self.batch, *FRAME))
        if context.shape != (self.batch, *FRAME) or context.dtype != np.uint8:
            raise ValueError(f"context frames must be uint8 ({self.batch}, 64, 64, 3), got {context.dtype} "
                             f"{context.shape}")
        self._reset(np.ascontiguousarray(context))
        return self.frames

    def reset_player(self, i, frame: np.ndarray) -> np.ndarray:
        """Restart player i's dream alone from frame uint8 (H, W, 3); the other players' tokens, state and
        frames, and the noise stream, are untouched. Returns the frames, row i the decoded frame.
        i may also be several distinct players with one frame each, (n, H, W, 3): one batched encode
        and decode restarts them all (a server's players who join in the same tick)."""
        rows = np.asarray(i).reshape(-1)
        if rows.dtype.kind not in "iu" or len(rows) == 0 or len(np.unique(rows)) != len(rows) \
                or rows.min() < 0 or rows.max() >= self.batch:
            raise ValueError(f"player must be an index in 0..{self.batch - 1} (or several distinct ones), got {i!r}")
        frames = np.asarray(frame)
        want = FRAME if np.ndim(i) == 0 else (len(rows), *FRAME)
        if frames.shape != want or frames.dtype != np.uint8:
            raise ValueError(f"context frames must be uint8 {want}, got {frames.dtype} {frames.shape}")
        full = np.empty((self.batch, *FRAME), np.uint8)     # the encoders' batch is static: the other rows
        full[:] = frames.reshape(-1, *FRAME)[0]             # encode a filler and are dropped
        full[rows] = frames.reshape(-1, *FRAME)
        self._reset_players(rows, full)
        return self.frames

    def step(self, actions) -> np.ndarray:
        """One dreamed frame per player; bad actions are fixed (see ActionGuard), never raised."""
        a = self.actions_guard(actions)
        draw_noise(self._gen, self.batch, self.grid, out=self._noise_t)
        self._step(a, self.noise)
        return self.frames

    # backends implement these: fill self.frames (_reset_players: only self.frames[rows])
    def _reset(self, context: np.ndarray) -> None:
        raise NotImplementedError

    def _reset_players(self, rows: np.ndarray, context: np.ndarray) -> None:
        """Encode context (B, H, W, 3), take rows' tokens, zero rows' state, decode rows' frames."""
        raise NotImplementedError

    def _step(self, actions: np.ndarray, noise: np.ndarray) -> None:
        raise NotImplementedError


class TorchStepper(Stepper):
    """Eager torch (backend "torch") or torch.compile (backend "compiled") on CPU or CUDA."""

    def __init__(self, tokenizer, dynamics, sampling, *, batch: int = 1, device="cpu", compiled: bool = False,
                 seed: int = 0, dtype: str = "fp32", report=None):
        super().__init__(batch, dynamics.config.grid, seed, report)
        self.backend = "compiled" if compiled else "torch"
        self.device = torch.device(device)
        self.tokenizer, self.sampling = tokenizer.eval(), sampling
        # A step's convolutions and linear layers in dtype (the conversion of the exported graphs and
        # the native packages); the encoder, run once per reset, stays fp32.
        self.dtype, self.dynamics, self.decoder = dtype, *in_dtype((dynamics.eval(), tokenizer.eval()), dtype,
                                                                   traced=compiled)
        g, dev = self.grid, self.device
        pin = dev.type == "cuda"
        self.tokens = torch.zeros(batch, g, g, dtype=torch.long, device=dev)                # (B, h, w)
        self.state = dynamics.init_state(batch, dev)                                        # L x (B, C_l, h, w)
        self.actions_dev = torch.zeros(batch, 4, device=dev)
        self.noise_dev = torch.zeros(batch, g, g, device=dev)
        self.frames_host = torch.zeros(batch, *FRAME, dtype=torch.uint8, pin_memory=pin)
        self.frames = self.frames_host.numpy()                  # the same memory: no copy on return
        self._actions_host = torch.zeros(batch, 4, pin_memory=pin)
        self._noise_host = torch.zeros(batch, g, g, pin_memory=pin)
        self._use_noise(self._noise_host.numpy())
        self._fn = self._live_step
        if compiled:
            # CUDA graphs ("reduce-overhead") on a GPU: the step's inputs are the static buffers above,
            # and the outputs are copied out before the next replay overwrites them.
            mode = "reduce-overhead" if dev.type == "cuda" else None
            self._fn = torch.compile(self._live_step, mode=mode, fullgraph=True, dynamic=False)

    def _live_step(self, tokens, actions, noise, *state):
        nxt, _, new_state = live_step(self.dynamics, tokens, actions, noise, list(state), self.sampling)
        frames = render(self.decoder, nxt, new_state[-1]).permute(0, 2, 3, 1)               # (B, H, W, 3)
        return (nxt, frames, *new_state)

    def _reset(self, context: np.ndarray) -> None:
        with torch.inference_mode():
            frames = torch.from_numpy(context).to(self.device).permute(0, 3, 1, 2)
            self.tokens.copy_(self.tokenizer.encode(frames))
            for s in self.state:
                s.zero_()
            self.frames_host.copy_(render(self.decoder, self.tokens, self.state[-1]).permute(0, 2, 3, 1))

    def _reset_players(self, rows: np.ndarray, context: np.ndarray) -> None:
        with torch.inference_mode():
            idx = torch.from_numpy(rows).to(self.device)
            frames = torch.from_numpy(context).to(self.device).permute(0, 3, 1, 2)
            self.tokens[idx] = self.tokenizer.encode(frames)[idx]
            for s in self.state:
                s[idx] = 0
            decoded = render(self.decoder, self.tokens[idx], self.state[-1][idx]).permute(0, 2, 3, 1)   # (n, H, W, 3)
            self.frames_host[torch.from_numpy(rows)] = decoded.cpu()

    def _step(self, actions: np.ndarray, noise: np.ndarray) -> None:
        with torch.inference_mode():
            self._actions_host.numpy()[:] = actions
            self.actions_dev.copy_(self._actions_host, non_blocking=True)
            self.noise_dev.copy_(self._noise_host, non_blocking=True)
            nxt, frames, *state = self._fn(self.tokens, self.actions_dev, self.noise_dev, *self.state)
            self.tokens.copy_(nxt)
            for buf, s in zip(self.state, state):
                buf.copy_(s)
            self.frames_host.copy_(frames)              # the one sync: the frames the caller shows


def _ort_session(path: Path, device: str, threads: int | None):
    from ochre.export import ort

    rt = ort.load()
    so = rt.SessionOptions()
    so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = rt.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op workers sleep instead of spinning. On these 2-core machines, shared with other
    # work, spinning workers fight the busy process for the cores: tiny, batch 1, 2 threads, load
    # average 4.2: step p50 12.5 -> 4.3 ms and p99 24.7 -> 9.8 ms with spinning off (1 thread: 4.1 ms).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.session(path, device, so)     # refuses a CUDA session that fell back to the CPU


class OrtStepper(Stepper):
    """ONNX Runtime over an `ochre export` folder, with IOBinding to buffers allocated once.

    The step's tokens and state ping-pong between two buffer sets (A -> B, then B -> A), so a step
    binds nothing new and copies nothing: four IOBindings (two for step, two for decode) are built
    up front. On CUDA the buffers live on the GPU and only actions, noise in and frames out cross.
    """

    backend = "onnxruntime"

    def __init__(self, onnx_dir, *, device: str = "cpu", threads: int | None = None, seed: int = 0,
                 guidance: float | None = None, report=None):
        from ochre.export import ort as ort_io
        from ochre.export.onnx import read_manifest

        ort = ort_io.load()

        self.manifest = m = read_manifest(onnx_dir)
        self.dtype = m["dtype"]
        if guidance is not None and guidance != m["sampling"]["guidance"]:
            raise ValueError(f"{onnx_dir} was exported with guidance {m['sampling']['guidance']}; re-export with "
                             f"`ochre export ... --guidance {guidance}` or use the torch backend")
        super().__init__(m["batch"], m["grid"], seed, report)
        onnx_dir = Path(onnx_dir)
        self.sessions = {g: _ort_session(onnx_dir / f"{g}.onnx", device, threads) for g in ("encode", "step", "decode")}
        self.device, self.folder = device, onnx_dir
        self.providers = self.sessions["step"].get_providers()      # checked by _ort_session; bench rows record them
        B, g = self.batch, self.grid
        dev = "cuda" if device == "cuda" else "cpu"

        def buf(shape, dtype):
            if dev == "cpu":
                arr = np.zeros(shape, dtype)
                return arr, ort.OrtValue.ortvalue_from_numpy(arr)
            return None, ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, "cuda", 0)

        # Host-side inputs: on the CPU the OrtValue shares the numpy array's memory.
        self._actions, self._actions_v = buf((B, 4), np.float32)
        self._noise, self._noise_v = buf((B, g, g), np.float32)
        if dev == "cpu":
            self._use_noise(self._noise)
        tokens = [buf((B, g, g), np.int64) for _ in range(2)]
        states = [[buf(tuple(s), np.float32) for s in m["state_shapes"]] for _ in range(2)]
        logits = buf((B, g, g, m["codebook_size"]), np.float32)                  # channels-last
        frames = buf((B, *FRAME), np.uint8)
        if dev == "cpu":
            self.frames = frames[0]
        self._frames_v, self._dev = frames[1], dev
        self._tokens, self._states = tokens, states
        names_in, names_out = m["inputs"]["step"], m["outputs"]["step"]
        self._step_bind, self._decode_bind = [], []
        for src in (0, 1):
            dst = 1 - src
            b = self.sessions["step"].io_binding()
            ins = [tokens[src][1], self._actions_v, self._noise_v, *[s[1] for s in states[src]]]
            outs = [tokens[dst][1], logits[1], *[s[1] for s in states[dst]]]
            for name, v in zip(names_in, ins):
                b.bind_ortvalue_input(name, v)
            for name, v in zip(names_out, outs):
                b.bind_ortvalue_output(name, v)
            self._step_bind.append(b)
            d = self.sessions["decode"].io_binding()
            d.bind_ortvalue_input("tokens", tokens[dst][1])
            d.bind_ortvalue_input("view", states[dst][-1][1])              # the step's view: its last state
            d.bind_ortvalue_output("frames", frames[1])
            self._decode_bind.append(d)
        self._cur = 0                                    # which buffer set holds the current tokens/state

    def _reset(self, context: np.ndarray) -> None:
        tokens = self.sessions["encode"].run(None, {"frames": context})[0]
        self._cur = 1                                    # decode binding 0 reads set 1
        self._write(self._tokens[1], tokens)
        for s in self._states[1]:
            self._write(s, np.zeros(s[1].shape(), np.float32))
        self.sessions["decode"].run_with_iobinding(self._decode_bind[0])
        self._read_frames()

    def _reset_players(self, rows: np.ndarray, context: np.ndarray) -> None:
        tokens = self.sessions["encode"].run(None, {"frames": context})[0]                # (B, h, w)
        cur = self._cur
        self._write_rows(self._tokens[cur], rows, tokens[rows])
        for s in self._states[cur]:
            self._write_rows(s, rows, 0)
        kept = self.frames.copy()
        self.sessions["decode"].run_with_iobinding(self._decode_bind[1 - cur])       # binding 1 - cur reads set cur
        self._read_frames()
        others = np.setdiff1d(np.arange(self.batch), rows)
        self.frames[others] = kept[others]              # decoded alike, but put back bit for bit all the same

    def _write_rows(self, pair, rows: np.ndarray, value) -> None:
        if pair[0] is not None:
            pair[0][rows] = value
        else:
            whole = pair[1].numpy()
            whole[rows] = value
            pair[1].update_inplace(whole)

    def _write(self, pair, value: np.ndarray) -> None:
        if pair[0] is not None:
            pair[0][...] = value
        else:
            pair[1].update_inplace(np.ascontiguousarray(value))

    def _read_frames(self) -> None:
        if self._dev != "cpu":
            self.frames[...] = self._frames_v.numpy()

    def _step(self, actions: np.ndarray, noise: np.ndarray) -> None:
        if self._dev == "cpu":
            self._actions[...] = actions                 # noise was drawn straight into its buffer
        else:
            self._actions_v.update_inplace(actions)
            self._noise_v.update_inplace(noise)
        src = self._cur
        self.sessions["step"].run_with_iobinding(self._step_bind[src])
        self.sessions["decode"].run_with_iobinding(self._decode_bind[src])
        self._cur = 1 - src
        self._read_frames()


def make_stepper(backend: str, model=None, *, onnx_dir=None, aoti_dir=None, batch: int = 1, device: str = "cpu",
                 threads: int | None = None, seed: int = 0, guidance: float | None = None, dtype: str | None = None,
                 report=None) -> Stepper:
    """A stepper for `backend`. torch / compiled load `model` (ochre.models.lookup.Model) and run
    its convolutions in `dtype` (default fp32); onnxruntime / tensorrt run an `ochre export` folder
    at this batch (onnx_dir), native an `ochre export --format aoti` folder (aoti_dir), each at the
    precision it was exported in (a `dtype` given must match it); ochre.runtime.exports makes them
    on demand."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    strict_fp32(device)            # on a GPU, every backend's fp32 is fp32 (ONNX Runtime's: export/ort.py)
    if backend in ("torch", "compiled"):
        from ochre.models.lookup import load

        if threads:
            torch.set_num_threads(threads)
        impl = "torch" if backend == "compiled" and device == "cpu" else "auto"
        tokenizer, dynamics, sampling = load(model, device, impl=impl)
        if guidance is not None:
            sampling = dataclasses.replace(sampling, guidance=guidance)
        return TorchStepper(tokenizer, dynamics, sampling, batch=batch, device=device,
                            compiled=backend == "compiled", seed=seed, dtype=dtype or "fp32", report=report)
    folder, flag = (aoti_dir, "--aoti") if backend == "native" else (onnx_dir, "--onnx")
    if folder is None:
        raise ValueError(f"the {backend} backend runs an export: pass {flag} DIR (made by "
                         f"`ochre export --format {EXPORTED[backend]}`)")
    if backend == "native":
        from ochre.runtime.native import NativeStepper

        stepper = NativeStepper(folder, device=device, threads=threads, seed=seed, guidance=guidance, report=report)
    elif backend == "onnxruntime":
        stepper = OrtStepper(folder, device=device, threads=threads, seed=seed, guidance=guidance, report=report)
    else:
        from ochre.runtime.tensorrt import TrtStepper

        stepper = TrtStepper(folder, seed=seed, guidance=guidance, report=report)
    if stepper.batch != batch:
        raise ValueError(f"{folder} was exported for batch {stepper.batch}, not {batch}; "
                         f"`ochre export ... --format {EXPORTED[backend]} --batch {batch}`")
    if dtype is not None and stepper.dtype != dtype:
        raise ValueError(f"{folder} was exported in {stepper.dtype}, not {dtype}; "
                         f"`ochre export ... --format {EXPORTED[backend]} --dtype {dtype}`")
    return stepper
