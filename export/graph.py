"""The three graphs every deploy path exports (ONNX, TensorRT, AOTInductor), as plain modules
with flat tensor inputs and outputs and static shapes.

Legend: B players, h w token grid (16), H W pixels (64), L ConvGRU layers, C_l their widths.

  EncodeGraph  frames uint8 (B, H, W, 3)                         -> tokens int64 (B, h, w)
  StepGraph    tokens int64 (B, h, w), actions fp32 (B, 4), noise fp32 (B, h, w) in [0, 1),
               state_0 .. state_L (Dynamics.state_shapes)        -> next tokens (B, h, w), [logits
               (B, h, w, K) fp32 with logits=True: the ONNX export's], next state_0 .. state_L
  DecodeGraph  tokens int64 (B, h, w)                            -> frames uint8 (B, H, W, 3)
StepGraph is ochre.models.step.live_step, the function every backend runs, sampler included. The
logits leave channels-last, the layout the model computes them in (Dynamics.head_logits): no
backend transposes 2 MB per player per step. The modules are converted by
ochre.models.precision: pure-torch kernels, and with dtype=torch.float16 or bfloat16 every
convolution and linear layer in that precision between fp32 tensors (inputs, outputs, state, gate
arithmetic, sampling and codebook search stay fp32). TensorRT 10+ is strongly typed, so the ONNX's
types are the engine's precisions.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ochre.models.dynamics import Dynamics
from ochre.models.precision import torch_impl_copy
from ochre.models.sampling import SamplingConfig
from ochre.models.step import live_step
from ochre.models.tokenizer import Tokenizer


class EncodeGraph(nn.Module):
    def __init__(self, tokenizer: Tokenizer, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tokenizer = torch_impl_copy(tokenizer, dtype)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(frames.permute(0, 3, 1, 2))                     # (B, h, w)


class DecodeGraph(nn.Module):
    def __init__(self, tokenizer: Tokenizer, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tokenizer = torch_impl_copy(tokenizer, dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(tokens, as_uint8=True).permute(0, 2, 3, 1).contiguous()   # (B, H, W, 3)


class StepGraph(nn.Module):
    """The live step as a graph; `logits` adds the log-probabilities (B, h, w, K) as the second
    output (the ONNX export's, for its parity check); without them, nothing reads 2 MB per player
    per step that the runtime would discard."""

    def __init__(self, model: Dynamics, sampling: SamplingConfig, dtype: torch.dtype = torch.float32,
                 logits: bool = True):
        super().__init__()
        self.model, self.sampling, self.logits = torch_impl_copy(model, dtype), sampling, logits

    @property
    def state_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample state shapes (Dynamics.state_shapes); prepend B."""
        return self.model.state_shapes()

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor, *state: torch.Tensor):
        codes, logits, new_state = live_step(self.model, tokens, actions, noise, list(state), self.sampling,
                                             self.logits)
        return (codes, logits, *new_state) if self.logits else (codes, *new_state)

    def example_inputs(self, batch: int = 1, device="cpu") -> tuple[torch.Tensor, ...]:
        cfg = self.model.config
        g = cfg.grid
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, cfg.codebook_size, (batch, g, g), generator=gen)
        actions = torch.rand(batch, 4, generator=gen) * 2 - 1
        noise = torch.rand(batch, g, g, generator=gen)
        state = [torch.randn(batch, *s, generator=gen) * 0.1 for s in self.state_shapes]
        return tuple(t.to(device) for t in (tokens, actions, noise, *state))
