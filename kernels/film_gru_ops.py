"""torch.library ops for the fused FiLM-ConvGRU step, and the public function over them.

Legend: B batch, C state channels, H W grid.

Ops (custom ops with fakes, so torch.compile(fullgraph=True) keeps each as one node):
  ochre::film_gru_step(gx, gh, h, film) -> h' (B, C, H, W)         autograd: every input
  ochre::film_gru_step_backward(grad_out, gx, gh, h, film)
      -> (d gx, d gh, d h, d film)                                   no double backward
As in ops.py, each body picks its implementation per call from the tensors (_dispatch.py):
the Triton kernel on CUDA, or on CPU under TRITON_INTERPRET=1; the torch reference otherwise.
Every output is contiguous on both paths, as the fakes say.
"""

from __future__ import annotations

import torch

from ochre.kernels._dispatch import HAS_TRITON, INTERPRET, triton_device_reason
from ochre.kernels.ops import _check_impl
from ochre.kernels.reference import check_film_gru_shapes, film_gru_step_backward_ref, film_gru_step_ref

if HAS_TRITON:  # used only after film_gru_triton_reason() said yes
    from ochre.kernels.film_gru_triton import FLOAT_DTYPES, film_gru_step_backward_triton, film_gru_step_triton


def film_gru_triton_reason(*tensors: torch.Tensor) -> str | None:
    """None when the film_gru ops run their Triton kernels on these tensors, else why not."""
    device = tensors[0].device
    reason = triton_device_reason(device)
    for t in tensors:
        if reason is not None:
            break
        if t.device != device:
            reason = f"the inputs are on different devices ({device} and {t.device})"
        elif t.dtype not in FLOAT_DTYPES:
            reason = f"the Triton kernels take {FLOAT_DTYPES}, got {t.dtype}"
        elif INTERPRET and t.dtype == torch.bfloat16:
            reason = "the Triton interpreter has no bfloat16 (numpy lacks it)"
    return reason


@torch.library.custom_op("ochre::film_gru_step", mutates_args=())
def _film_gru_step_op(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
    if film_gru_triton_reason(gx, gh, h, film) is None:
        return film_gru_step_triton(gx, gh, h, film)
    return film_gru_step_ref(gx, gh, h, film).contiguous()


@_film_gru_step_op.register_fake
def _(gx, gh, h, film):
    torch._check(h.dim() == 4 and gx.shape == gh.shape, lambda: "film_gru_step: gx, gh (B, 3C, H, W), h (B, C, H, W)")
    torch._check(gx.shape[1] == 3 * h.shape[1], lambda: "film_gru_step: gx must have 3C channels")
    torch._check(film.shape[-1] == 6 * h.shape[1], lambda: "film_gru_step: film must be (B, 6C)")
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@torch.library.custom_op("ochre::film_gru_step_backward", mutates_args=())
def _film_gru_step_backward_op(grad_out: torch.Tensor, gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor,
                               film: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if film_gru_triton_reason(grad_out, gx, gh, h, film) is None:
        return film_gru_step_backward_triton(grad_out, gx, gh, h, film)
    return tuple(t.contiguous() for t in film_gru_step_backward_ref(grad_out, gx, gh, h, film))


@_film_gru_step_backward_op.register_fake
def _(grad_out, gx, gh, h, film):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (gx, gh, h, film))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)  # the backward recomputes the gates: nothing else is kept


def _backward(ctx, grad_out: torch.Tensor):
    grads = torch.ops.ochre.film_gru_step_backward(grad_out, *ctx.saved_tensors)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad))


_film_gru_step_op.register_autograd(_backward, setup_context=_setup_context)


def film_gru_step(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, film: torch.Tensor, *,
                  impl: str = "auto") -> torch.Tensor:
    """One FiLM-ConvGRU gate step (film_gru_step_ref has the maths): gx, gh (B, 3C, H, W),
    h (B, C, H, W), film (B, 6C) = [γ (3C), β (3C)] -> h' (B, C, H, W) in h's dtype, contiguous.

    Differentiable in all four inputs. Math in fp32 (fp64 if an input is fp64); inputs may
    differ in dtype. impl: "auto" (the op: Triton where it runs, see the module docstring),
    "triton" (the op, raising if Triton cannot run here), "torch" (the reference, autograd
    through it).
    """
    _check_impl(impl)
    check_film_gru_shapes(gx, gh, h, film)
    if impl == "torch":
        return film_gru_step_ref(gx, gh, h, film)
    if impl == "triton" and (reason := film_gru_triton_reason(gx, gh, h, film)) is not None:
        raise RuntimeError(f"film_gru_step(impl='triton'): {reason}")
    return torch.ops.ochre.film_gru_step(gx, gh, h, film)
