"""The TensorRT backend: engines from `ochre export --format tensorrt`, buffers in torch CUDA tensors.

Written against TensorRT's documented Python API (10+): deserialize_cuda_engine, one execution
context per engine, set_tensor_address on buffers allocated once, execute_async_v3 on one stream.
Tokens and state ping-pong between two buffer sets as in the ONNX Runtime backend, so a step only
re-points six addresses. TensorRT cannot be installed on the development machines (docs/architecture.md#what-the-machines-give):
this path is exercised where it is, and its tests skip elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ochre.export.onnx import read_manifest
from ochre.export.tensorrt import engine_info, import_tensorrt
from ochre.runtime.stepper import FRAME, Stepper


class TrtStepper(Stepper):
    backend = "tensorrt"

    def __init__(self, onnx_dir, *, seed: int = 0, guidance: float | None = None, report=None):
        import torch

        trt = import_tensorrt()
        onnx_dir = Path(onnx_dir)
        self.manifest = m = read_manifest(onnx_dir)
        self.dtype = m["dtype"]
        engine_info(onnx_dir)
        if guidance is not None and guidance != m["sampling"]["guidance"]:
            raise ValueError(f"{onnx_dir} was exported with guidance {m['sampling']['guidance']}; re-export")
        super().__init__(m["batch"], m["grid"], seed, report)
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self.engines, self.contexts = {}, {}
        for name in ("encode", "step", "decode"):
            engine = runtime.deserialize_cuda_engine((onnx_dir / "tensorrt" / f"{name}.engine").read_bytes())
            if engine is None:
                raise RuntimeError(f"{onnx_dir}/tensorrt/{name}.engine does not load here (built for another GPU "
                                   "or TensorRT version?); rebuild with `ochre export --format tensorrt`")
            self.engines[name], self.contexts[name] = engine, engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        dev = torch.device("cuda")
        B, g = self.batch, self.grid
        self._tokens = [torch.zeros(B, g, g, dtype=torch.long, device=dev) for _ in range(2)]
        self._states = [[torch.zeros(*s, device=dev) for s in m["state_shapes"]] for _ in range(2)]
        self._logits = torch.zeros(B, g, g, m["codebook_size"], device=dev)               # channels-last
        self._actions = torch.zeros(B, 4, device=dev)
        self._noise = torch.zeros(B, g, g, device=dev)
        self._frames = torch.zeros(B, *FRAME, dtype=torch.uint8, device=dev)
        self._frames_host = torch.zeros(B, *FRAME, dtype=torch.uint8, pin_memory=True)
        self.frames = self._frames_host.numpy()
        self._host_in = torch.zeros(B, 4 + g * g, pin_memory=True)               # actions | noise
        self._cur = 0

    def _bind(self, name: str, tensors: dict) -> None:
        ctx = self.contexts[name]
        for key, t in tensors.items():
            ctx.set_tensor_address(key, t.data_ptr())

    def _run(self, name: str) -> None:
        if not self.contexts[name].execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT {name} engine failed to enqueue")

    def _reset(self, context: np.ndarray) -> None:
        import torch

        frames = torch.from_numpy(context).cuda()
        self._cur = 0
        with torch.cuda.stream(self.stream):
            self._bind("encode", {"frames": frames, "tokens": self._tokens[0]})
            self._run("encode")
            for s in self._states[0]:
                s.zero_()
            self._bind("decode", {"tokens": self._tokens[0], "frames": self._frames})
            self._run("decode")
            self._frames_host.copy_(self._frames, non_blocking=True)
        self.stream.synchronize()

    def _step(self, actions: np.ndarray, noise: np.ndarray) -> None:
        import torch

        m, src = self.manifest, self._cur
        dst = 1 - src
        host = self._host_in.numpy()
        host[:, :4], host[:, 4:] = actions, noise.reshape(self.batch, -1)
        with torch.cuda.stream(self.stream):
            self._actions.copy_(self._host_in[:, :4], non_blocking=True)
            self._noise.copy_(self._host_in[:, 4:].view(self.batch, self.grid, self.grid), non_blocking=True)
            names_in, names_out = m["inputs"]["step"], m["outputs"]["step"]
            ins = [self._tokens[src], self._actions, self._noise, *self._states[src]]
            outs = [self._tokens[dst], self._logits, *self._states[dst]]
            self._bind("step", dict(zip(names_in + names_out, ins + outs)))
            self._run("step")
            self._bind("decode", {"tokens": self._tokens[dst], "frames": self._frames})
            self._run("decode")
            self._frames_host.copy_(self._frames, non_blocking=True)
        self.stream.synchronize()                   # the one sync: the frames the caller shows
        self._cur = dst
