"""The three graphs every deploy path exports (ONNX, TensorRT, AOTInductor), as plain modules
with flat tensor inputs and outputs and static shapes.

Legend: B players, h w token grid (16), H W pixels (64), L ConvGRU layers, C_l their widths.

  EncodeGraph  frames uint8 (B, H, W, 3)                         -> tokens int64 (B, h, w)
  StepGraph    tokens int64 (B, h, w), actions fp32 (B, 4), noise fp32 (B, h, w) in [0, 1),
               state_0 .. state_L (Dynamics.state_shapes)        -> next tokens (B, h, w), logits
               (B, h, w, K) fp32 (channels-last: see below; with logits=True, the ONNX export's),
               next state_0 .. state_L
  DecodeGraph  tokens int64 (B, h, w)                            -> frames uint8 (B, H, W, 3)
The logits leave channels-last, the layout the model computes them in (Dynamics.head_logits):
every reduction over the codes runs along contiguous rows, and no backend transposes 2 MB per
player per step (ONNX Runtime's transpose of (1, 2048, 16, 16) back to NCHW alone took 2.6 ms).
Sampling happens inside StepGraph (ochre.models.sampling: inverse-CDF on the noise input; see
live_step and sample_codes), so a live step never returns to the host
between model and sampler, and the same noise gives the same tokens on every backend. The fused
step kernel is a Python custom op, which no exporter can carry: the graphs are built with
impl="torch" (the reference), which exporters and compilers fuse themselves.
dtype=torch.float16 runs every convolution and linear layer in fp16 between fp32 tensors (the
graph's inputs, outputs, state, gate arithmetic, sampling and codebook search stay fp32): TensorRT
10+ is strongly typed, so the ONNX's types are the engine's precisions.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from ochre.models.dynamics import Dynamics, traced_for_inference
from ochre.models.sampling import SamplingConfig, guided_step, sample_mixture, sample_tokens, samples_factors
from ochre.models.tokenizer import Tokenizer


class _Low(nn.Module):
    """A Conv2d / Linear computed in fp16 or bf16 between fp32 tensors."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).float()


class _Rows(nn.Module):
    """A Linear on one row per player (the action MLP and FiLM: 160 to 12k multiply-adds at batch 1)
    as a product and a sum, which compilers fuse with the code around it: as oneDNN calls the four
    took 15-30 µs each, 0.05 ms of a 0.79 ms AOTInductor step (shipped model, batch 1, bf16, 2-core
    CPU: 0.74 ms without them). Always fp32: nothing to gain from a lower precision at that size.
    The same parameter names as the Linear, so state dicts load either way."""

    def __init__(self, inner: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(inner.weight.detach().float(), requires_grad=False)    # (out, in)
        self.bias = nn.Parameter(inner.bias.detach().float(), requires_grad=False)        # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.weight.dtype)[..., None, :] * self.weight).sum(dim=-1) + self.bias


def _rows_in(model: nn.Module) -> nn.Module:
    """Replace the per-player Linear layers of a Dynamics model (in place) by _Rows."""
    if isinstance(model, Dynamics):
        for i, layer in enumerate(model.action_mlp):
            if isinstance(layer, nn.Linear):
                model.action_mlp[i] = _Rows(layer)
        for cell in model.cells:
            cell.film = _Rows(cell.film)
    return model


def _convs_in(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Wrap every Conv2d and Linear of `module` (in place) to compute in `dtype`."""
    if dtype == torch.float32:
        return module
    if dtype == torch.float64:
        return _fp64_reference(module)
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"graphs are float32, float16, bfloat16 or (the parity reference) float64, not {dtype}")
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d | nn.Linear):
            setattr(module, name, _Low(child, dtype))
        else:
            _convs_in(child, dtype)
    return module


def _fp64_reference(model: nn.Module) -> nn.Module:
    """The whole model in fp64: the reference of the parity checks (ochre.export.parity)."""
    return model.double()


# Precision names (CLI, manifests, bench rows) -> the dtype of the convolutions and linear layers.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def in_dtype(modules, dtype: str, traced: bool = False) -> tuple[nn.Module, ...]:
    """Torch-impl copies of the modules, as the graphs run them, with their convolutions and linear
    layers computing in the precision named `dtype` (PRECISIONS); "fp32" and not `traced` (for a
    compiler): the modules as they are."""
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    if dtype == "fp32" and not traced:
        return tuple(modules)
    return tuple(_with_torch_impl(m, PRECISIONS[dtype]) for m in modules)


def _with_torch_impl(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of the model whose kernels are the pure-torch references (exportable), its per-player
    linear layers _Rows and its other convolutions and linear layers in `dtype`."""
    cfg = dataclasses.replace(model.config, impl="torch")
    clone = type(model)(cfg).to(next(model.parameters()).device)
    clone.load_state_dict(model.state_dict())
    return _convs_in(_rows_in(clone), dtype).eval()


class EncodeGraph(nn.Module):
    def __init__(self, tokenizer: Tokenizer, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tokenizer = _with_torch_impl(tokenizer, dtype)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.encode(frames.permute(0, 3, 1, 2))                     # (B, h, w)


class DecodeGraph(nn.Module):
    def __init__(self, tokenizer: Tokenizer, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tokenizer = _with_torch_impl(tokenizer, dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tokenizer.decode(tokens, as_uint8=True).permute(0, 2, 3, 1).contiguous()   # (B, H, W, 3)


CHUNK = 16         # codes per chunk of the candidate search in sample_codes


def sample_codes(logits: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """sample_tokens(logits, u, cfg) for the live step, with the top-k search on fewer logits.

    logits (B, K, h, w), u (B, h, w) -> codes (B, h, w) int64: the same codes as sample_tokens (the
    same sorted top-k values, so the same CDF and draw; only the order among exactly equal logits
    may differ, which the parity checks count as near-ties). The K codes are cut into chunks of
    CHUNK; the k chunks with the largest maxima hold every top-k logit (a chunk holding one has a
    maximum >= the k-th largest, and at most k chunks can), so sample_tokens runs on those k·CHUNK
    candidates. TopK over all K along a strided axis was the largest non-conv cost of the step:
    on a 2-core x86 CPU, 1 thread, onnxruntime 0.96 -> 0.46 ms at batch 1 and 8.4 -> 4.9 ms at
    batch 8; eager torch 1.14 -> 0.66 ms at batch 1. Inductor's own search is unchanged by it.
    """
    B, K, h, w = logits.shape
    k = min(cfg.top_k, K)
    if cfg.temperature == 0 or k == 1 or K % CHUNK or k * CHUNK >= K:
        return sample_tokens(logits, u, cfg)
    best = logits.view(B, K // CHUNK, CHUNK, h, w).amax(dim=2).topk(k, dim=1).indices          # (B, k, h, w)
    within = torch.arange(CHUNK, device=logits.device).view(1, 1, CHUNK, 1, 1)
    idx = (best[:, :, None] * CHUNK + within).view(B, k * CHUNK, h, w)                         # (B, k·C, h, w)
    pick = sample_tokens(logits.gather(1, idx), u, cfg)                                        # (B, h, w)
    return idx.gather(1, pick[:, None])[:, 0]


def live_step(model: Dynamics, tokens: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
              state: list[torch.Tensor], sampling: SamplingConfig, logits: bool = False):
    """One live step, the work every backend does: tokens (B, h, w), actions (B, 4), noise (B, h, w),
    state -> next codes (B, h, w), the log-probabilities they were drawn from (B, h, w, K) if
    `logits` (else None), next state.

    Two spellings of one draw. Traced for a compiler without gradients (traced_for_inference) with
    the copy prior, no guidance and a decoding sample_mixture draws from the factors of (the default
    one: samples_factors), the mixture is sampled that way: no
    (B, h, w, K) tensor is written unless `logits` asks for it. Eager, guided_step's log-probabilities
    go through sample_codes: sample_mixture's extra small ops cost more than they save there (shipped
    model, batch 1, bf16 step on 2 cores: 2.5 vs 3.0 ms eager; 1.0 vs 0.82 ms as AOTInductor packages)."""
    if model.config.copy_bias and sampling.guidance == 1.0 and samples_factors(sampling, model.config.codebook_size) \
            and traced_for_inference():
        mixture, new_state = model.step(tokens, actions, state, boost=sampling.boosts, parts=True)
        codes, lp = sample_mixture(mixture, noise, sampling, logits)
        return codes, lp, new_state
    lp, new_state = guided_step(model, tokens, actions, state, sampling)
    return sample_codes(lp, noise, sampling), lp.movedim(1, -1) if logits else None, new_state


class StepGraph(nn.Module):
    """The live step as a graph; `logits` adds the log-probabilities (B, h, w, K) as the second
    output (the ONNX export's, for its parity check); without them, nothing reads 2 MB per player
    per step that the runtime would discard."""

    def __init__(self, model: Dynamics, sampling: SamplingConfig, dtype: torch.dtype = torch.float32,
                 logits: bool = True):
        super().__init__()
        self.model, self.sampling, self.logits = _with_torch_impl(model, dtype), sampling, logits

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
