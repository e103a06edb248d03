"""Triton kernels, their torch.library ops and pure-torch references (ochre.kernels).

Public API (stable; the ops behind it may change):
  nearest_code(z (N, D), codebook (K, D), *, impl="auto") -> (N,) int64
  codebook_lookup(codes (...) int, codebook (K, D), *, impl="auto") -> (..., D)
  film_gru_step(gx (B, 3C, H, W), gh (B, 3C, H, W), h (B, C, H, W), film (B, 6C), *, impl="auto")
      -> h' (B, C, H, W): the fused gate step of a FiLM-ConvGRU cell, differentiable in all four
Importing this package registers torch.ops.ochre.{nearest_code, codebook_lookup,
codebook_lookup_backward, film_gru_step, film_gru_step_backward}. Which implementation an op
runs is decided per call (ops.py, film_gru_ops.py). impl="auto" runs the op, "triton" the op
or an error saying why Triton cannot run here, "torch" the pure-torch reference.
"""

from ochre.kernels._dispatch import HAS_TRITON, INTERPRET
from ochre.kernels.film_gru_ops import film_gru_step
from ochre.kernels.ops import codebook_lookup, nearest_code
from ochre.kernels.reference import (
    codebook_lookup_backward_ref,
    codebook_lookup_ref,
    film_gru_step_backward_ref,
    film_gru_step_ref,
    nearest_code_ref,
)

__all__ = [
    "nearest_code", "codebook_lookup", "film_gru_step",
    "nearest_code_ref", "codebook_lookup_ref", "codebook_lookup_backward_ref",
    "film_gru_step_ref", "film_gru_step_backward_ref",
    "HAS_TRITON", "INTERPRET",
]
