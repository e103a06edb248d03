"""Fused nearest-code search: squared-L2 distance and argmin in one pass over the codebook.

Legend: N vectors, D code dim, K codebook size; BLOCK_N/BLOCK_K/BLOCK_D tile sizes.

The unfused form writes and rereads an (N, K) fp32 distance matrix: 512 MB per call at
N = 65,536, K = 2048, against 17 MB of z + codebook + indices. Here each program keeps
BLOCK_N rows of z in registers, walks the codebook in BLOCK_K tiles, and carries a running
(min, argmin) per row, so the only global traffic is z once, the codebook once per program
(from L2: 512 KB at K=2048, D=64, fp32) and N int64 indices.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime import JITFunction

MAX_BLOCK_D = 128  # z tile lives in registers; D in the design is 16-64
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _nearest_code_fwd_kernel(
    # pointers
    z_ptr, codebook_ptr, out_ptr,
    # sizes
    N, K, D,
    # strides
    stride_zn, stride_zd, stride_ck, stride_cd,
    # meta
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)         # (BLOCK_N,) int64: N*stride may pass 2^31
    dims = tl.arange(0, BLOCK_D)                                       # (BLOCK_D,)
    row_ok = rows < N
    dim_ok = dims < D
    # Padded dims load as 0, so they add nothing to z.e or ||e||^2.
    z = tl.load(z_ptr + rows[:, None] * stride_zn + dims[None, :] * stride_zd,
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)     # (BLOCK_N, BLOCK_D)

    best = tl.full((BLOCK_N,), float("inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_N,), tl.int32)  # stays 0 if every distance is inf/NaN: always a valid index
    for k0 in range(0, K, BLOCK_K):
        codes = k0 + tl.arange(0, BLOCK_K)                             # (BLOCK_K,)
        code_ok = codes < K
        e_t = tl.load(codebook_ptr + codes[None, :] * stride_ck + dims[:, None] * stride_cd,
                      mask=dim_ok[:, None] & code_ok[None, :], other=0.0)  # (BLOCK_D, BLOCK_K)
        # ||e||^2 is recomputed per tile rather than passed in: BLOCK_K*D FMAs against the
        # dot's BLOCK_N*BLOCK_K*D (1/BLOCK_N extra, <7%), and the op stays a single launch.
        e_f = e_t.to(tl.float32)
        e_sq = tl.sum(e_f * e_f, axis=0)                               # (BLOCK_K,)
        # ||z||^2 is the same for every code of a row, so argmin needs only ||e||^2 - 2 z.e.
        ze = tl.dot(z, e_t, input_precision=DOT_PRECISION)             # (BLOCK_N, BLOCK_K) fp32
        dist = tl.where(code_ok[None, :], e_sq[None, :] - 2.0 * ze, float("inf"))
        tile_min = tl.min(dist, axis=1)                                # (BLOCK_N,)
        # Lowest index among the tile's equal minima, so the result does not depend on how
        # the reduction tree is shaped; K is past every real index.
        tile_idx = tl.min(tl.where(dist == tile_min[:, None], codes[None, :], K), axis=1)
        # Strict < across tiles: on a tie the earlier tile (lower index) keeps the row.
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        best_idx = tl.where(better, tile_idx, best_idx)
    tl.store(out_ptr + rows, best_idx.to(tl.int64), mask=row_ok)


# TRITON_INTERPRET=1 at import turns @triton.jit into an interpreter object; see _dispatch.py.
INTERPRETED = not isinstance(_nearest_code_fwd_kernel, JITFunction)


@dataclass(frozen=True)
class NearestCodeConfig:
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2


# The interpreter runs one numpy program at a time: the smallest tiles tl.dot accepts (16)
# keep it fast and give several K tiles even for tiny codebooks, so the cross-tile argmin runs.
INTERPRETER_CONFIG = NearestCodeConfig(block_n=16, block_k=16)


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def gpu_config(n: int, block_d: int, dtype: torch.dtype, num_sms: int) -> NearestCodeConfig:
    """Tiles for CUDA, picked by shape (no autotune: deterministic, no first-call stall,
    safe inside CUDA-graph capture).

    Register counts are from compiling this kernel for sm_90 with Triton 3.9's ptxas (no GPU
    needed; tests/test_kernels.py repeats it): fp32 runs tl.dot as IEEE FMAs (see the
    launcher), and a 64-row tile at BLOCK_D=64 takes 255 registers and spills 424 B at 4 warps
    but 126 and none at 8; at BLOCK_D=128 only 32 rows fit without spilling (76 at 8 warps).
    fp16/bf16 go to wgmma from 64 rows: 128 rows take 91-98 registers at 8 warps.
    Below the cap BLOCK_N halves until the grid has two programs per SM: at N = 4096 a
    64-row tile launches 64 programs for the H100's 132 SMs, half of them idle, whereas a
    smaller tile only rereads the codebook more often from L2 (512 KB at K=2048, D=64, fp32).
    These are first choices from that arithmetic, not a timed sweep: time them with
    bench/kernels.py on the target GPU before tuning.
    """
    if dtype == torch.float32:
        cap = 64 if block_d <= 64 else 32
    else:
        cap = 128
    block_n = cap
    while block_n > 16 and triton.cdiv(n, block_n) < 2 * num_sms:
        block_n //= 2
    num_warps = 8 if (dtype == torch.float32 and block_n >= 32) or block_n == 128 else 4
    return NearestCodeConfig(block_n=block_n, block_k=64, num_warps=num_warps, num_stages=2)


def _check_inputs(z: torch.Tensor, codebook: torch.Tensor) -> None:
    if z.dim() != 2 or codebook.dim() != 2:
        raise ValueError(f"nearest_code: z must be (N, D) and codebook (K, D); got {tuple(z.shape)} "
                         f"and {tuple(codebook.shape)}")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_code: z has D={z.shape[1]} but the codebook has D={codebook.shape[1]}")
    if codebook.shape[0] == 0:
        raise ValueError("nearest_code: the codebook is empty (K=0)")
    if z.dtype not in FLOAT_DTYPES or z.dtype != codebook.dtype:
        raise TypeError(f"nearest_code: z and codebook must share one of {FLOAT_DTYPES}; got {z.dtype} "
                        f"and {codebook.dtype} (ochre.kernels.nearest_code promotes mixed dtypes)")
    if z.device != codebook.device:
        raise ValueError(f"nearest_code: z is on {z.device} but the codebook on {codebook.device}")
    if z.shape[1] > MAX_BLOCK_D:
        raise ValueError(f"nearest_code: D={z.shape[1]} > {MAX_BLOCK_D} is not supported by the Triton "
                         f"kernel (the z tile lives in registers); use impl='torch'")
    if INTERPRETED and z.dtype == torch.bfloat16:
        raise TypeError("nearest_code: the Triton interpreter has no bfloat16 (numpy lacks it); "
                        "bf16 runs on CUDA only")
    if not INTERPRETED and z.device.type != "cuda":
        raise ValueError(f"nearest_code: compiled Triton kernels need CUDA tensors, got {z.device}")


def nearest_code_triton(z: torch.Tensor, codebook: torch.Tensor,
                        config: NearestCodeConfig | None = None) -> torch.Tensor:
    """Launcher: z (N, D), codebook (K, D), same float dtype and device -> (N,) int64.

    Any strides work (they are kernel arguments); a unit inner stride coalesces best.
    `config` overrides the tile choice (tests use it to run the GPU tiles in the interpreter).
    """
    _check_inputs(z, codebook)
    n, d = z.shape
    k = codebook.shape[0]
    out = torch.empty(n, dtype=torch.int64, device=z.device)
    if n == 0:
        return out
    block_d = max(16, triton.next_power_of_2(d))  # tl.dot needs every dim >= 16
    if config is None:
        config = INTERPRETER_CONFIG if INTERPRETED else gpu_config(n, block_d, z.dtype, _num_sms(z.device.index))
    # tf32 (Triton's default for fp32 dots on GPU) rounds z and e to 10 mantissa bits, a
    # relative error of ~5e-4 per product. Simulated on Gaussian data (N=8192, K=2048,
    # D=32/64) that moves the argmin on 0.05-0.06% of rows against an fp64 search, where fp32
    # with IEEE products moves none: rows that are not near-ties at fp32 precision, so the
    # indices would no longer match the reference. IEEE keeps the fp32 bound (~D * 6e-8).
    # For fp16/bf16 operands the products are exact in fp32 and the dot runs on tensor cores
    # whatever this says.
    precision = "ieee"
    grid = (triton.cdiv(n, config.block_n),)
    device_ctx = torch.cuda.device(z.device) if z.device.type == "cuda" else contextlib.nullcontext()
    with device_ctx:  # launch on z's GPU, not the current one
        _nearest_code_fwd_kernel[grid](
            z, codebook, out,
            n, k, d,
            z.stride(0), z.stride(1), codebook.stride(0), codebook.stride(1),
            BLOCK_N=config.block_n, BLOCK_K=config.block_k, BLOCK_D=block_d,
            DOT_PRECISION=precision,
            num_warps=config.num_warps, num_stages=config.num_stages,
            # Pinned, since Triton 3.10 flips the default: a*b+c as one FMA rounds once, not
            # twice, which only tightens the error bound in ochre.kernels.testing.
            enable_fp_fusion=True,
        )
    return out
