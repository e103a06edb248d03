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


def film_gru_step_ref(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
    """Gate arithmetic of one FiLM-ConvGRU step ("linear before reset"), in fp32.

    Legend: B batch, C state channels, H W grid. Gate order along channels is [z, r, n].
      gx   (B, 3C, H, W)  input-convolution pre-activations (bias included)
      gh   (B, 3C, H, W)  hidden-convolution pre-activations (bias included)
      h    (B, C, H, W)   previous state
      film (B, 6C)        [gamma (3C), beta (3C)]: per-sample, per-channel affine from the action MLP
    a_z = (gx_z + gh_z)·(1 + γ_z) + β_z,  z = σ(a_z)          update gate
    a_r = (gx_r + gh_r)·(1 + γ_r) + β_r,  r = σ(a_r)          reset gate
    a_n = (gx_n + r·gh_n)·(1 + γ_n) + β_n, n = tanh(a_n)      candidate
    h'  = h + z·(n − h)                                       returned in h's dtype
    Linear-before-reset (r multiplies W_h·h, not h) lets the input convolutions of a whole
    teacher-forced window run as one batched call outside the recurrence.
    """
    B, C3 = gx.shape[:2]
    C = C3 // 3
    gamma, beta = film.float().view(B, 2, C3, 1, 1).unbind(1)                # (B, 3C, 1, 1) each
    gxz, gxr, gxn = gx.float().chunk(3, dim=1)                              # (B, C, H, W) each
    ghz, ghr, ghn = gh.float().chunk(3, dim=1)
    gz, gr, gn = (1 + gamma).chunk(3, dim=1)
    bz, br, bn = beta.chunk(3, dim=1)
    z = torch.sigmoid((gxz + ghz) * gz + bz)
    r = torch.sigmoid((gxr + ghr) * gr + br)
    n = torch.tanh((gxn + r * ghn) * gn + bn)
    hf = h.float()
    return (hf + z * (n - hf)).to(h.dtype)
