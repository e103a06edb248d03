"""Entry points for ahead-of-time compilation of ochre's Triton kernels (`triton.tools.compile`).

Legend: N vectors, K codebook size, D code dim; B batch, C state channels, P = h*w positions.

`triton.tools.compile` takes integer constexprs only, and the library kernels take a string
(DOT_PRECISION) and a dtype (ACC). These wrappers pin those and the contiguous strides, and
call the library kernels unchanged (Triton inlines them), so the C launchers have plain
signatures:
    nearest_code_f32(stream, z, codebook, out, N, K, D)
        z (N, D), codebook (K, D) fp32 -> out (N,) int64
    film_gru_fwd_f32(stream, gx, gh, h, film, out, B, C, P)
        gx, gh (B, 3C, P), h (B, C, P), film (B, 6C) fp32 -> out (B, C, P)
"""

import triton
import triton.language as tl

from ochre.kernels.film_gru_triton import _film_gru_fwd_kernel
from ochre.kernels.nearest_code_triton import _nearest_code_fwd_kernel


@triton.jit
def nearest_code_f32(z_ptr, codebook_ptr, out_ptr, N, K, D,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    # IEEE fp32 products, as the launcher in kernels/ picks for fp32 (tf32 moves the argmin).
    _nearest_code_fwd_kernel(z_ptr, codebook_ptr, out_ptr, N, K, D, D, 1, D, 1,
                             BLOCK_N, BLOCK_K, BLOCK_D, "ieee")


@triton.jit
def film_gru_fwd_f32(gx_ptr, gh_ptr, h_ptr, film_ptr, out_ptr, B, C, P,  # B: the launch grid's
                     BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    num_c_blocks = tl.cdiv(C, BLOCK_C)
    _film_gru_fwd_kernel(gx_ptr, gh_ptr, h_ptr, film_ptr, out_ptr, C, P, num_c_blocks,
                         3 * C * P, P, C * P, P, 6 * C, 1, BLOCK_C, BLOCK_P, tl.float32)
