"""Pure-torch references: the specification every kernel is tested and benchmarked against.

Legend: N vectors, D code dim, K codebook size.
"""

from __future__ import annotations

import torch


def nearest_code_ref(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of z: (N, D), (K, D) -> (N,) int64.

    Ties go to the lowest index (torch.argmin returns the first minimum); cdist's sqrt does
    not move the argmin. Distances are fp32. Above 25 rows cdist uses the matmul form
    ||z||^2 - 2 z.e + ||e||^2, whose rounding error scales with ||z||^2 + ||e||^2 rather than
    with the distance, so near-ties may go either way, as in the Triton kernel; the tests
    judge both against an fp64 search (ochre.kernels.testing). The difference-based mode
    (compute_mode="donot_use_mm_for_euclid_dist") has no such cancellation but took 1.1-2.8x
    as long on 2 shared CPU cores at K=2048, N=4096-16384 (bench/kernels.py row cdist_exact,
    bench/results/kernels_cpu_2026-11-25.json), and this function is what the ops run on CPU
    during training; the two chose the same index on every row there.
    """
    return torch.cdist(z.float(), codebook.float()).argmin(dim=1)                   # (N, K) -> (N,)


def codebook_lookup_ref(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Gather code vectors: codes (...) int, codebook (K, D) -> (..., D)."""
    return codebook[codes.long()]


def codebook_lookup_backward_ref(grad_out: torch.Tensor, codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Gradient of codebook_lookup_ref w.r.t. the codebook: grad_out (..., D) -> (K, D).

    The same scatter-add autograd runs for codebook[codes] (index_put_ with accumulate=True
    into zeros), so on the torch path the two agree bit for bit.
    """
    d = grad_out.shape[-1]
    grad = grad_out.new_zeros((num_codes, d))                          # (K, D)
    return grad.index_put_((codes.reshape(-1).long(),), grad_out.reshape(-1, d), accumulate=True)
