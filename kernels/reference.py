"""Pure-torch references: the specification every kernel is tested and benchmarked against.

Legend: N vectors, D code dim, K codebook size.
"""

from __future__ import annotations

import torch


def nearest_code_ref(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared L2) for each row of z: (N, D), (K, D) -> (N,) int64.

    Ties go to the lowest index (torch.argmin returns the first minimum). Distances are
    computed in fp32 as ||z - e||^2 directly, not via the matmul expansion, so the
    reference has no cancellation error of its own.
    """
    d = torch.cdist(z.float(), codebook.float()).square_()      # (N, K)
    return d.argmin(dim=1)


def codebook_lookup_ref(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Gather code vectors: codes (...) int, codebook (K, D) -> (..., D)."""
    return codebook[codes.long()]
