"""A model as the live graphs run it: pure-torch kernels, per-player linear layers as fused rows, and
the convolutions and linear layers in a lower precision between fp32 tensors.

Every deploy path (ONNX, AOTInductor, TensorRT) and the torch/compiled runtime backends and
`ochre eval --dtype` convert a model the same way, through `in_dtype`, so "bf16" means one thing
everywhere. The fused step kernel is a Python custom op, which no exporter can carry: the copies use
the pure-torch reference, which exporters and compilers fuse themselves.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

# Precision names (CLI, manifests, bench rows) -> the dtype of the convolutions and linear layers.
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class LowPrecision(nn.Module):
    """A Conv2d / Linear computed in fp16 or bf16 between fp32 tensors."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner, self.dtype = inner.to(dtype), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.to(self.dtype)).float()


class Rows(nn.Module):
    """A Linear on one row per player (the action MLP and FiLM: 160 to 12k multiply-adds at batch 1)
    as a product and a sum, which compilers fuse with the code around it instead of a library call
    per layer (15-30 µs each on a CPU). Always fp32: nothing to gain from a lower precision at that
    size. The same parameter names as the Linear, so state dicts load either way."""

    def __init__(self, inner: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(inner.weight.detach().float(), requires_grad=False)    # (out, in)
        self.bias = nn.Parameter(inner.bias.detach().float(), requires_grad=False)        # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.to(self.weight.dtype)[..., None, :] * self.weight).sum(dim=-1) + self.bias


def _rows_in(model: nn.Module) -> nn.Module:
    """Replace the per-player Linear layers of a Dynamics model (in place) by Rows."""
    from ochre.models.dynamics import Dynamics

    if isinstance(model, Dynamics):
        for i, layer in enumerate(model.action_mlp):
            if isinstance(layer, nn.Linear):
                model.action_mlp[i] = Rows(layer)
        for cell in model.cells:
            cell.film = Rows(cell.film)
    return model


def _convs_in(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Wrap every Conv2d and Linear of `module` (in place) to compute in `dtype`; float64 makes the
    whole model fp64 (the reference of the parity checks)."""
    if dtype == torch.float32:
        return module
    if dtype == torch.float64:
        return module.double()
    if dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"graphs are float32, float16, bfloat16 or (the parity reference) float64, not {dtype}")
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d | nn.Linear):
            setattr(module, name, LowPrecision(child, dtype))
        else:
            _convs_in(child, dtype)
    return module


def torch_impl_copy(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A copy of a tokenizer or dynamics model as the graphs run it, eval mode: pure-torch kernels
    (exportable), per-player linear layers as Rows, other convolutions and linear layers in `dtype`."""
    cfg = dataclasses.replace(model.config, impl="torch")
    clone = type(model)(cfg).to(next(model.parameters()).device)
    clone.load_state_dict(model.state_dict())
    return _convs_in(_rows_in(clone), dtype).eval()


def in_dtype(modules, dtype: str, traced: bool = False) -> tuple[nn.Module, ...]:
    """The modules as the graphs run them (torch_impl_copy) in the precision named `dtype`
    (PRECISIONS); for "fp32" and not `traced` (for a compiler), the modules as they are."""
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    if dtype == "fp32" and not traced:
        return tuple(modules)
    return tuple(torch_impl_copy(m, PRECISIONS[dtype]) for m in modules)


def strict_fp32(device) -> dict:
    """fp32 on CUDA means fp32: TF32 off for cuDNN convolutions (torch's default is on) and cuBLAS
    matmuls (off by default), so fp32 rows and parity checks on a GPU are not TF32 (a 10-bit
    mantissa) in disguise. Process-wide, like the flags themselves; a no-op on the CPU. Returns the
    settings in force, which benchmarks record beside their rows."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return math_settings()


def math_settings() -> dict:
    """The process-wide numerics that change what "fp32" computes on a GPU, and determinism."""
    return {"tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "deterministic": torch.are_deterministic_algorithms_enabled()}
