"""Triton kernels, their torch.library ops and pure-torch references (ochre.kernels).

Public API (stable; the ops behind it may change):
  nearest_code(z (N, D), codebook (K, D)) -> (N,) int64
  codebook_lookup(codes (...) int, codebook (K, D)) -> (..., D)
"""

from ochre.kernels.reference import codebook_lookup_ref, nearest_code_ref

# Until the Triton ops land these are the references; the signatures are the contract.
nearest_code = nearest_code_ref
codebook_lookup = codebook_lookup_ref

__all__ = ["nearest_code", "codebook_lookup", "nearest_code_ref", "codebook_lookup_ref"]
