"""Codebook lookup: a row gather forward and an atomic scatter-add backward.

Legend: M looked-up codes (codes flattened), D code dim, K codebook size.

Both kernels are pure memory traffic (M*D elements each way), so tiles only need to be
big enough to keep loads wide: BLOCK_M rows of BLOCK_D elements per program.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from triton.runtime import JITFunction

CODE_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.int64)
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _codebook_lookup_fwd_kernel(
    # pointers
    codes_ptr, codebook_ptr, out_ptr,
    # sizes
    M, K, D,
    # strides
    stride_codes, stride_ck, stride_cd, stride_om,
    # meta
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)          # (BLOCK_M,) int64
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    dim_ok = dims < D
    code = tl.load(codes_ptr + rows * stride_codes, mask=row_ok, other=0).to(tl.int64)
    # A code outside [0, K) reads nothing and yields a zero row: a bounds check on the host
    # would cost a device sync per call.
    code_ok = row_ok & (code >= 0) & (code < K)
    vals = tl.load(codebook_ptr + code[:, None] * stride_ck + dims[None, :] * stride_cd,
                   mask=code_ok[:, None] & dim_ok[None, :], other=0.0)      # (BLOCK_M, BLOCK_D)
    tl.store(out_ptr + rows[:, None] * stride_om + dims[None, :], vals,
             mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit
def _codebook_lookup_bwd_kernel(
    # pointers
    grad_out_ptr, codes_ptr, grad_codebook_ptr,
    # sizes
    M, K, D,
    # strides
    stride_gm, stride_gd, stride_codes,
    # meta
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)          # (BLOCK_M,) int64
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    dim_ok = dims < D
    code = tl.load(codes_ptr + rows * stride_codes, mask=row_ok, other=0).to(tl.int64)
    code_ok = row_ok & (code >= 0) & (code < K)
    g = tl.load(grad_out_ptr + rows[:, None] * stride_gm + dims[None, :] * stride_gd,
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0).to(tl.float32)  # (BLOCK_M, BLOCK_D)
    # fp32 accumulator (K, D), contiguous. Relaxed: only atomicity matters, not ordering.
    # Repeated codes collide on the same addresses, so the sum order (and the last bits of
    # the result) can vary run to run, as with torch's own CUDA index_put_(accumulate=True).
    tl.atomic_add(grad_codebook_ptr + code[:, None] * D + dims[None, :], g,
                  mask=code_ok[:, None] & dim_ok[None, :], sem="relaxed")


INTERPRETED = not isinstance(_codebook_lookup_fwd_kernel, JITFunction)

# 64 rows x 64 dims x 4 B = 16 KB per program: wide enough for full 128 B transactions per
# row at D >= 32 fp32, and M = 65,536 lookups still launch 1024 programs (~8 per H100 SM).
# The interpreter uses 16 rows so the tests' small M spans several programs.
DEFAULT_BLOCK_M = 16 if INTERPRETED else 64
MAX_TILE = 4096  # elements per program: 32 a thread at 4 warps, so wide D shrinks BLOCK_M
NUM_WARPS = 4


def _tiles(d: int) -> tuple[int, int]:
    block_d = triton.next_power_of_2(d)
    return max(1, min(DEFAULT_BLOCK_M, MAX_TILE // block_d)), block_d


def _check_inputs(codes: torch.Tensor, table: torch.Tensor, what: str) -> None:
    if codes.dtype not in CODE_DTYPES:
        raise TypeError(f"codebook_lookup: codes must be an integer tensor {CODE_DTYPES}, got {codes.dtype}")
    if table.dtype not in FLOAT_DTYPES:
        raise TypeError(f"codebook_lookup: {what} must be one of {FLOAT_DTYPES}, got {table.dtype}")
    if codes.device != table.device:
        raise ValueError(f"codebook_lookup: codes are on {codes.device} but the {what} on {table.device}")
    if INTERPRETED and table.dtype == torch.bfloat16:
        raise TypeError("codebook_lookup: the Triton interpreter has no bfloat16 (numpy lacks it); "
                        "bf16 runs on CUDA only")
    if not INTERPRETED and table.device.type != "cuda":
        raise ValueError(f"codebook_lookup: compiled Triton kernels need CUDA tensors, got {table.device}")


def _device_ctx(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def codebook_lookup_triton(codes: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Launcher: codes (...) int, codebook (K, D) float -> (..., D), codebook's dtype."""
    _check_inputs(codes, codebook, "codebook")
    if codebook.dim() != 2:
        raise ValueError(f"codebook_lookup: codebook must be (K, D), got {tuple(codebook.shape)}")
    k, d = codebook.shape
    flat = codes.reshape(-1)                                           # (M,) a view when it can be
    m = flat.numel()
    out = torch.empty((m, d), dtype=codebook.dtype, device=codebook.device)
    if m > 0 and d > 0:
        block_m, block_d = _tiles(d)
        with _device_ctx(codebook):
            _codebook_lookup_fwd_kernel[(triton.cdiv(m, block_m),)](
                flat, codebook, out,
                m, k, d,
                flat.stride(0), codebook.stride(0), codebook.stride(1), out.stride(0),
                BLOCK_M=block_m, BLOCK_D=block_d,
                num_warps=NUM_WARPS, enable_fp_fusion=True,  # nothing to fuse; pinned to silence 3.9's warning
            )
    return out.view(*codes.shape, d)


def codebook_lookup_backward_triton(grad_out: torch.Tensor, codes: torch.Tensor, num_codes: int) -> torch.Tensor:
    """Launcher: grad_out (..., D), codes (...) -> grad_codebook (K, D) in grad_out's dtype.

    Rows of grad_out are scatter-added into an fp32 (K, D) buffer and cast once at the end,
    so fp16/bf16 gradients of a popular code do not lose the bits that per-add rounding
    would (adding ones in bf16 stalls at 256: 256 + 1 rounds back to 256).
    Rows whose code is outside [0, K) add nothing.
    """
    _check_inputs(codes, grad_out, "grad_out")
    d = grad_out.shape[-1]
    if grad_out.shape[:-1] != codes.shape:
        raise ValueError(f"codebook_lookup backward: grad_out {tuple(grad_out.shape)} does not match "
                         f"codes {tuple(codes.shape)} + (D,)")
    flat_codes = codes.reshape(-1)                                     # (M,)
    flat_grad = grad_out.reshape(-1, d)                                # (M, D); strides may be 0 (expand)
    m = flat_codes.numel()
    acc = torch.zeros((num_codes, d), dtype=torch.float32, device=grad_out.device)
    if m > 0 and d > 0:
        block_m, block_d = _tiles(d)
        with _device_ctx(grad_out):
            _codebook_lookup_bwd_kernel[(triton.cdiv(m, block_m),)](
                flat_grad, flat_codes, acc,
                m, num_codes, d,
                flat_grad.stride(0), flat_grad.stride(1), flat_codes.stride(0),
                BLOCK_M=block_m, BLOCK_D=block_d,
                num_warps=NUM_WARPS, enable_fp_fusion=True,
            )
    return acc.to(grad_out.dtype)
