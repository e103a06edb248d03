"""Pure-torch references: the specification every kernel is tested and benchmarked against.

Legend: N vectors, D code dim, K codebook size; B batch, C state channels, H W grid.
"""

from __future__ import annotations

import torch

CHUNK = 2048         # rows of nearest_code_ref's distance blocks: 2048 x 2048 fp32 = 16 MiB


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

    Rows go CHUNK at a time, so that each (CHUNK, K) block of distances is still in the cache when
    argmin reads it: 2x faster on 2 CPU cores at N = 20736 (a clip of 81 frames), K = 2048, D = 32
    (0.20 -> 0.10 s), the same index on every row there; `ochre tokenize` of the default demo's clips
    226 -> 247-261 frames/s, the same token bytes on 12 shards (3,888 frames).
    """
    z, codebook = z.float(), codebook.float()
    return torch.cat([torch.cdist(z[i:i + CHUNK], codebook).argmin(dim=1)           # (CHUNK, K) -> (CHUNK,)
                      for i in range(0, len(z), CHUNK)]) if len(z) else z.new_zeros(0, dtype=torch.long)



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


def check_film_gru_shapes(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, film: torch.Tensor) -> None:
    """Raise ValueError unless gx, gh (B, 3C, H, W), h (B, C, H, W) and film (B, 6C) fit together."""
    if h.dim() != 4:
        raise ValueError(f"film_gru_step: h must be (B, C, H, W), got {tuple(h.shape)}")
    B, C, H, W = h.shape
    want = {"gx": (B, 3 * C, H, W), "gh": (B, 3 * C, H, W), "film": (B, 6 * C)}
    for name, t in (("gx", gx), ("gh", gh), ("film", film)):
        if tuple(t.shape) != want[name]:
            raise ValueError(f"film_gru_step: h is {tuple(h.shape)}, so {name} must be {want[name]}; "
                             f"got {tuple(t.shape)}")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    # fp32, or fp64 when an input is fp64: gradcheck and the tests' exact baselines need it.
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def film_gru_step_ref(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
    """Gate arithmetic of one FiLM-ConvGRU step ("linear before reset"), in fp32 (fp64 if an input is).

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
    dt = _compute_dtype(gx, gh, h, film)
    B, C3 = gx.shape[:2]
    gamma, beta = film.to(dt).view(B, 2, C3, 1, 1).unbind(1)                 # (B, 3C, 1, 1) each
    gxz, gxr, gxn = gx.to(dt).chunk(3, dim=1)                               # (B, C, H, W) each
    ghz, ghr, ghn = gh.to(dt).chunk(3, dim=1)
    gz, gr, gn = (1 + gamma).chunk(3, dim=1)
    bz, br, bn = beta.chunk(3, dim=1)
    z = torch.sigmoid((gxz + ghz) * gz + bz)
    r = torch.sigmoid((gxr + ghr) * gr + br)
    n = torch.tanh((gxn + r * ghn) * gn + bn)
    hf = h.to(dt)
    return (hf + z * (n - hf)).to(h.dtype)


def film_gru_step_backward_ref(grad_out: torch.Tensor, gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor,
                               film: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of film_gru_step_ref, written out: grad_out (B, C, H, W) -> (d gx, d gh, d h, d film),
    each in its input's dtype. Gates are recomputed from the inputs, as the Triton backward does.

    With s_z = gx_z + gh_z, s_r = gx_r + gh_r, s_n = gx_n + r·gh_n and g = grad_out:
      da_z = g·(n − h)·z(1 − z),  da_n = g·z·(1 − n²),  da_r = da_n·(1 + γ_n)·gh_n·r(1 − r)
      d gx = da·(1 + γ) per gate;  d gh the same, except d gh_n = da_n·(1 + γ_n)·r;  d h = g·(1 − z)
      d γ = Σ_HW da·s,  d β = Σ_HW da
    """
    dt = _compute_dtype(grad_out, gx, gh, h, film)
    B, C3 = gx.shape[:2]
    gamma, beta = film.to(dt).view(B, 2, C3, 1, 1).unbind(1)                 # (B, 3C, 1, 1) each
    gxz, gxr, gxn = gx.to(dt).chunk(3, dim=1)                               # (B, C, H, W) each
    ghz, ghr, ghn = gh.to(dt).chunk(3, dim=1)
    gz, gr, gn = (1 + gamma).chunk(3, dim=1)
    bz, br, bn = beta.chunk(3, dim=1)
    s_z, s_r = gxz + ghz, gxr + ghr
    z = torch.sigmoid(s_z * gz + bz)
    r = torch.sigmoid(s_r * gr + br)
    s_n = gxn + r * ghn
    n = torch.tanh(s_n * gn + bn)
    g, hf = grad_out.to(dt), h.to(dt)
    da_z = g * (n - hf) * z * (1 - z)
    da_n = g * z * (1 - n * n)
    da_r = da_n * gn * ghn * r * (1 - r)
    d_gx = torch.cat([da_z * gz, da_r * gr, da_n * gn], dim=1)               # (B, 3C, H, W)
    d_gh = torch.cat([da_z * gz, da_r * gr, da_n * gn * r], dim=1)
    da = torch.cat([da_z, da_r, da_n], dim=1)
    s = torch.cat([s_z, s_r, s_n], dim=1)
    d_film = torch.cat([(da * s).sum((2, 3)), da.sum((2, 3))], dim=1)       # (B, 6C)
    return d_gx.to(gx.dtype), d_gh.to(gh.dtype), (g * (1 - z)).to(h.dtype), d_film.to(film.dtype)
