"""torch.library ops for the codebook kernels, and the public functions over them.

Legend: N vectors, D code dim, K codebook size.

Ops (each a custom_op with a fake, so torch.compile(fullgraph=True) keeps it as one node):
  ochre::nearest_code(z, codebook) -> (N,) int64
  ochre::codebook_lookup(codes, codebook) -> (..., D)          autograd: codebook only
  ochre::codebook_lookup_backward(grad_out, codes, K) -> (K, D) autograd: grad_out (double backward)
Each op body picks its implementation per call from the tensors' device (_dispatch.py):
the Triton kernel on CUDA, or on CPU under TRITON_INTERPRET=1; the torch reference otherwise.
The branch is inside the op, so a compiled graph holds the same node on every device.
"""

from __future__ import annotations

import torch

from ochre.kernels._dispatch import HAS_TRITON, INTERPRET, triton_device_reason
from ochre.kernels.reference import codebook_lookup_backward_ref, codebook_lookup_ref, nearest_code_ref

if HAS_TRITON:  # the names below are used only after triton_device_reason() said yes
    from ochre.kernels.codebook_lookup_triton import (
        CODE_DTYPES,
        FLOAT_DTYPES,
        codebook_lookup_backward_triton,
        codebook_lookup_triton,
    )
    from ochre.kernels.nearest_code_triton import MAX_BLOCK_D, nearest_code_triton

IMPLS = ("auto", "triton", "torch")


def _float_reason(dtype: torch.dtype) -> str | None:
    if dtype not in FLOAT_DTYPES:
        return f"the Triton kernels take {FLOAT_DTYPES}, got {dtype}"
    if INTERPRET and dtype == torch.bfloat16:
        return "the Triton interpreter has no bfloat16 (numpy lacks it)"
    return None


def nearest_code_triton_reason(z: torch.Tensor, codebook: torch.Tensor) -> str | None:
    """None when ochre::nearest_code runs its Triton kernel on these inputs, else why not."""
    reason = triton_device_reason(z.device)
    if reason is None and z.device != codebook.device:
        reason = f"z is on {z.device} but the codebook on {codebook.device}"
    if reason is None:
        reason = _float_reason(torch.promote_types(z.dtype, codebook.dtype))
    if reason is None and z.shape[-1] > MAX_BLOCK_D:
        reason = f"D={z.shape[-1]} > {MAX_BLOCK_D} (the kernel keeps a z tile in registers)"
    return reason


def codebook_lookup_triton_reason(table: torch.Tensor, codes: torch.Tensor) -> str | None:
    """None when the lookup ops run Triton for this codebook (or grad_out) and codes."""
    reason = triton_device_reason(table.device)
    if reason is None and codes.device != table.device:
        reason = f"codes are on {codes.device} but the codebook on {table.device}"
    if reason is None and codes.dtype not in CODE_DTYPES:
        reason = f"the Triton kernels take codes of {CODE_DTYPES}, got {codes.dtype}"
    return reason or _float_reason(table.dtype)


# ---- ochre::nearest_code -------------------------------------------------------------------

@torch.library.custom_op("ochre::nearest_code", mutates_args=())
def _nearest_code_op(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    if nearest_code_triton_reason(z, codebook) is None:
        dtype = torch.promote_types(z.dtype, codebook.dtype)  # autocast may hand in bf16 z, fp32 codebook
        return nearest_code_triton(z.to(dtype), codebook.to(dtype))
    return nearest_code_ref(z, codebook)


@_nearest_code_op.register_fake
def _(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    torch._check(z.dim() == 2 and codebook.dim() == 2, lambda: "nearest_code: z (N, D), codebook (K, D)")
    torch._check(z.shape[1] == codebook.shape[1], lambda: "nearest_code: z and codebook differ in D")
    return z.new_empty((z.shape[0],), dtype=torch.int64)


# ---- ochre::codebook_lookup and its backward -----------------------------------------------

@torch.library.custom_op("ochre::codebook_lookup", mutates_args=())
def _codebook_lookup_op(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    if codebook_lookup_triton_reason(codebook, codes) is None:
        return codebook_lookup_triton(codes, codebook)
    # Index with the flattened codes: codebook[0-dim tensor] would be a view of the codebook,
    # and a custom op may not return an alias of its input.
    return codebook_lookup_ref(codes.reshape(-1), codebook).view(*codes.shape, codebook.shape[1])


@_codebook_lookup_op.register_fake
def _(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    torch._check(codebook.dim() == 2, lambda: "codebook_lookup: codebook must be (K, D)")
    return codebook.new_empty((*codes.shape, codebook.shape[1]))


@torch.library.custom_op("ochre::codebook_lookup_backward", mutates_args=())
def _codebook_lookup_backward_op(grad_out: torch.Tensor, codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    if codebook_lookup_triton_reason(grad_out, codes) is None:
        return codebook_lookup_backward_triton(grad_out, codes, num_codes)
    return codebook_lookup_backward_ref(grad_out, codes, num_codes)


@_codebook_lookup_backward_op.register_fake
def _(grad_out: torch.Tensor, codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    return grad_out.new_empty((num_codes, grad_out.shape[-1]))


def _lookup_setup_context(ctx, inputs, output) -> None:
    codes, codebook = inputs
    ctx.save_for_backward(codes)
    ctx.num_codes = codebook.shape[0]
    ctx.codebook_dtype = codebook.dtype


def _lookup_backward(ctx, grad_out: torch.Tensor):
    (codes,) = ctx.saved_tensors
    grad_codebook = None
    if ctx.needs_input_grad[1]:
        grad_codebook = torch.ops.ochre.codebook_lookup_backward(grad_out, codes, ctx.num_codes)
        grad_codebook = grad_codebook.to(ctx.codebook_dtype)
    return None, grad_codebook  # codes are integers: no gradient


def _lookup_backward_setup_context(ctx, inputs, output) -> None:
    _, codes, _ = inputs
    ctx.save_for_backward(codes)


def _lookup_double_backward(ctx, grad_grad_codebook: torch.Tensor):
    # The backward is linear in grad_out; its adjoint is the gather again.
    (codes,) = ctx.saved_tensors
    return torch.ops.ochre.codebook_lookup(codes, grad_grad_codebook), None, None


_codebook_lookup_op.register_autograd(_lookup_backward, setup_context=_lookup_setup_context)
_codebook_lookup_backward_op.register_autograd(_lookup_double_backward,
                                               setup_context=_lookup_backward_setup_context)


# ---- public functions ----------------------------------------------------------------------

def _check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def nearest_code(z: torch.Tensor, codebook: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Index of the nearest code (squared L2) per row: z (N, D), codebook (K, D) -> (N,) int64.

    Ties go to the lowest index. impl: "auto" (Triton where it runs, see module docstring),
    "triton" (raise if it cannot run here), "torch" (the reference). Indices carry no
    gradient, so z and codebook are detached; the straight-through estimator is the caller's.
    """
    _check_impl(impl)
    z, codebook = z.detach(), codebook.detach()
    if impl == "torch":
        return nearest_code_ref(z, codebook)
    if impl == "triton" and (reason := nearest_code_triton_reason(z, codebook)) is not None:
        raise RuntimeError(f"nearest_code(impl='triton'): {reason}")
    return torch.ops.ochre.nearest_code(z, codebook)


def codebook_lookup(codes: torch.Tensor, codebook: torch.Tensor, *, impl: str = "auto") -> torch.Tensor:
    """Gather code vectors: codes (...) int, codebook (K, D) -> (..., D); differentiable in codebook.

    impl as for nearest_code. Codes must lie in [0, K): the torch path raises on others, the
    Triton path (which cannot check without a device sync) returns zero rows for them.
    """
    _check_impl(impl)
    if impl == "torch":
        return codebook_lookup_ref(codes, codebook)
    if impl == "triton" and (reason := codebook_lookup_triton_reason(codebook, codes)) is not None:
        raise RuntimeError(f"codebook_lookup(impl='triton'): {reason}")
    return torch.ops.ochre.codebook_lookup(codes, codebook)
