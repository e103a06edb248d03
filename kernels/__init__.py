"""Triton kernels, their torch.library ops and pure-torch references (ochre.kernels).

Public API (stable; the ops behind it may change):
  nearest_code(z (N, D), codebook (K, D), *, impl="auto") -> (N,) int64
  codebook_lookup(codes (...) int, codebook (K, D), *, impl="auto") -> (..., D)
Importing this package registers torch.ops.ochre.{nearest_code, codebook_lookup,
codebook_lookup_backward}. Which implementation an op runs is decided per call in ops.py.
"""

from ochre.kernels._dispatch import HAS_TRITON, INTERPRET
from ochre.kernels.ops import codebook_lookup, nearest_code
from ochre.kernels.reference import (
    codebook_lookup_backward_ref,
    codebook_lookup_ref,
    film_gru_step_ref,
    nearest_code_ref,
)

__all__ = [
    "nearest_code", "codebook_lookup",
    "nearest_code_ref", "codebook_lookup_ref", "codebook_lookup_backward_ref", "film_gru_step_ref",
    "HAS_TRITON", "INTERPRET",
]
