"""Pure-torch references: the specification every kernel is tested and benchmarked against.

Legend: N vectors, D code dim, K codebook size.
"""

from __future__ import annotations

import torch


def nearest_code_ref(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of z: (N, D), (K, D) -> (N,) int64.

    Ties go to the lowest index (torch.argmin returns the first minimum). Distances are
    computed in fp32 from the differences z - e ("donot_use_mm": cdist's default switches to
    the ||z||^2 - 2 z.e + ||e||^2 matmul form above 25 rows, whose cancellation error scales
    with ||z||^2 + ||e||^2 rather than with the distance), so the spec has no cancellation
    error of its own. It costs 1.6-5x the matmul form on CPU (N=4096, K=512..2048, D=32..64,
    2 cores); bench/kernels.py times both. cdist returns sqrt(d^2), which has the same argmin.
    """
    d = torch.cdist(z.float(), codebook.float(), compute_mode="donot_use_mm_for_euclid_dist")  # (N, K)
    return d.argmin(dim=1)


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
