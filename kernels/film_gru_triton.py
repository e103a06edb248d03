"""Fused FiLM-ConvGRU gate step (see film_gru_step_ref): forward and backward, one pass each.

Legend: B batch, C state channels, H W grid, P = H*W positions; BLOCK_C channels x BLOCK_P
positions per tile. Inputs are contiguous NCHW, so a channel's P positions are adjacent.

Eager torch runs the forward as 16 elementwise kernels that read and write 39 (B, C, H, W)
tensors in all; fused, it reads gx, gh, h (7 of them) and writes h' (1). The backward
recomputes the gates from the inputs instead of saving them: it reads 8 and writes 7.
One program owns (b, BLOCK_C channels) and walks all P positions, so the FiLM gradients
(sums over P) are reduced in registers: no atomics, and the same bits on every run.
σ and tanh are built from exp(−|x|) and a division, both written so that the interpreter and sm_90
compute them alike: in fp32, tl.exp compiles to ex2.approx of a rounded x·log2(e) (a few ulp at
|x| ~ 10) and `/` to the approximate div.full, so fp32 uses `_exp_neg` (range reduction by ln 2 and a
polynomial: plain multiply-adds, IEEE on both) and div_rn (IEEE division). fp64 keeps tl.exp and
`/`, which are precise there. tests/test_kernels.py checks the sm_90 PTX holds no approximate
instruction; the ulp figures below are interpreted.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime import JITFunction

from ochre.kernels.reference import check_film_gru_shapes

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@triton.jit
def _exp_neg(x, ACC: tl.constexpr):
    """exp(x) for x <= 0. fp32: x = n·ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split in a 9-bit
    high part, so n·ln2_hi is exact), exp(r) by Cephes' expf polynomial (peak error 2.3e-7
    relative), times 2^n built from its exponent bits. Below −87, where 2^n would leave the normal
    range, it returns exp(−87) = 1.6e-38 instead of a smaller number: nothing here can tell them
    apart (σ(−87) and its gradient are below every tolerance by 30 orders of magnitude)."""
    if ACC == tl.float32:
        x = tl.maximum(x, -87.0)
        n = tl.floor(x * 1.4426950408889634 + 0.5)                    # round(x / ln 2), in [−125, 0]
        r = (x - n * 0.693359375) - n * -2.12194440e-4                # x − n·ln2, ln2 = hi + lo
        p = 1.9875691500e-4 * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        scale = ((n.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)     # 2^n, exact
        return (p * r * r + r + 1.0) * scale
    else:
        return tl.exp(x)


@triton.jit
def _div(a, b, ACC: tl.constexpr):
    """a / b rounded to nearest (fp32's `/` is the approximate div.full on CUDA)."""
    if ACC == tl.float32:
        return tl.math.div_rn(a, b)
    else:
        return a / b


@triton.jit
def _sigmoid(x, ACC: tl.constexpr):
    """σ(x) and 1 − σ(x) = σ(−x), from E = exp(−|x|) in (0, 1]: unlike tl.sigmoid's exp(−x) it
    never overflows, and 1 − σ (for σ' = σ(1 − σ) and d h = g(1 − z)) keeps its relative
    accuracy where the gate saturates instead of cancelling. Over [−12, 12] in fp32: mean
    error 0.37 ulp, max 2.1 (torch 0.44, 1.9); _exp_neg alone: mean 0.27, max 0.94."""
    e = _exp_neg(-tl.abs(x), ACC)
    q = _div(e, 1 + e, ACC)                                           # σ(−|x|) <= 1/2
    return tl.where(x >= 0, 1 - q, q), tl.where(x >= 0, q, 1 - q)


@triton.jit
def _tanh(x, ACC: tl.constexpr):
    """tanh(x) and 1 − tanh²(x) from e = exp(−2|x|) in (0, 1] (the interpreter has no libdevice).

    1 − 2e/(1 + e) keeps 1 − |tanh| exact in relative terms near saturation, and the derivative
    4e/(1 + e)² needs no 1 − n² (from a rounded n that gave gradients ~3x torch's error).
    Near 0 the subtraction cancels (~1e-7 absolute), so fp32 takes the Taylor series to x¹⁷
    below 0.55 (truncation < 0.1 ulp; beyond it e <= 1/3). Over [−12, 12]: mean error 0.20 ulp,
    max 1.3 (torch 0.20, 0.51), where (1 − e)/(1 + e) alone averaged 1.15.
    """
    a = tl.abs(x)
    e = _exp_neg(-2 * a, ACC)
    t = 1 - _div(2 * e, 1 + e, ACC)
    if ACC == tl.float32:
        a_s = tl.minimum(a, 0.55)                                      # the series overflows at large |x|
        a2 = a_s * a_s
        p = -929569 / 638512875 + a2 * (6404582 / 10854718875)
        p = 21844 / 6081075 + a2 * p
        p = -1382 / 155925 + a2 * p
        p = 62 / 2835 + a2 * p
        p = -17 / 315 + a2 * p
        p = 2 / 15 + a2 * p
        p = -1 / 3 + a2 * p
        t = tl.where(a < 0.55, a_s + a_s * a2 * p, t)
    return tl.where(x < 0, -t, t), _div(4 * e, (1 + e) * (1 + e), ACC)


@triton.jit
def _film(film_ptr, b, chans, c_ok, C, stride_fb, stride_fc, ACC: tl.constexpr):
    """The six per-channel FiLM vectors of sample b: scales (1 + γ) and shifts β, each (BLOCK_C, 1)."""
    row = film_ptr + b * stride_fb
    sz = 1 + tl.load(row + chans * stride_fc, mask=c_ok, other=0.0).to(ACC)
    sr = 1 + tl.load(row + (C + chans) * stride_fc, mask=c_ok, other=0.0).to(ACC)
    sn = 1 + tl.load(row + (2 * C + chans) * stride_fc, mask=c_ok, other=0.0).to(ACC)
    bz = tl.load(row + (3 * C + chans) * stride_fc, mask=c_ok, other=0.0).to(ACC)
    br = tl.load(row + (4 * C + chans) * stride_fc, mask=c_ok, other=0.0).to(ACC)
    bn = tl.load(row + (5 * C + chans) * stride_fc, mask=c_ok, other=0.0).to(ACC)
    return sz[:, None], sr[:, None], sn[:, None], bz[:, None], br[:, None], bn[:, None]


@triton.jit
def _gates(gx_ptr, gh_ptr, offs, mask, gate_step, sz, sr, sn, bz, br, bn, ACC: tl.constexpr):
    """Gates z, r, n, the complements 1 − z, 1 − r, dn/da_n, the pre-FiLM sums s_z, s_r, s_n
    and gh_n of one (BLOCK_C, BLOCK_P) tile."""
    gxz = tl.load(gx_ptr + offs, mask=mask, other=0.0).to(ACC)
    gxr = tl.load(gx_ptr + offs + gate_step, mask=mask, other=0.0).to(ACC)
    gxn = tl.load(gx_ptr + offs + 2 * gate_step, mask=mask, other=0.0).to(ACC)
    ghz = tl.load(gh_ptr + offs, mask=mask, other=0.0).to(ACC)
    ghr = tl.load(gh_ptr + offs + gate_step, mask=mask, other=0.0).to(ACC)
    ghn = tl.load(gh_ptr + offs + 2 * gate_step, mask=mask, other=0.0).to(ACC)
    s_z = gxz + ghz
    s_r = gxr + ghr
    z, zc = _sigmoid(s_z * sz + bz, ACC)
    r, rc = _sigmoid(s_r * sr + br, ACC)
    s_n = gxn + r * ghn
    n, dn = _tanh(s_n * sn + bn, ACC)
    return z, zc, r, rc, n, dn, s_z, s_r, s_n, ghn


@triton.jit
def _film_gru_fwd_kernel(
    # pointers
    gx_ptr, gh_ptr, h_ptr, film_ptr, out_ptr,
    # sizes
    C, P, NUM_C_BLOCKS,
    # strides (positions have unit stride; out shares h's)
    stride_gb, stride_gc, stride_hb, stride_hc, stride_fb, stride_fc,
    # meta
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // NUM_C_BLOCKS).to(tl.int64)                             # int64: b*stride may pass 2^31
    chans = (pid % NUM_C_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)     # (BLOCK_C,)
    c_ok = chans < C
    sz, sr, sn, bz, br, bn = _film(film_ptr, b, chans, c_ok, C, stride_fb, stride_fc, ACC)
    for p0 in range(0, P, BLOCK_P):
        pos = p0 + tl.arange(0, BLOCK_P)                               # (BLOCK_P,)
        mask = c_ok[:, None] & (pos < P)[None, :]                      # (BLOCK_C, BLOCK_P)
        offs_g = b * stride_gb + chans[:, None] * stride_gc + pos[None, :]
        offs_h = b * stride_hb + chans[:, None] * stride_hc + pos[None, :]
        z, zc, r, rc, n, dn, s_z, s_r, s_n, ghn = _gates(gx_ptr, gh_ptr, offs_g, mask, C * stride_gc,
                                                          sz, sr, sn, bz, br, bn, ACC)
        h = tl.load(h_ptr + offs_h, mask=mask, other=0.0).to(ACC)
        out = h + z * (n - h)
        tl.store(out_ptr + offs_h, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _film_gru_bwd_kernel(
    # pointers
    grad_out_ptr, gx_ptr, gh_ptr, h_ptr, film_ptr, d_gx_ptr, d_gh_ptr, d_h_ptr, d_film_ptr,
    # sizes
    C, P, NUM_C_BLOCKS,
    # strides (positions have unit stride; grad_out and d_h share h's, d_gx and d_gh gx's, d_film film's)
    stride_gb, stride_gc, stride_hb, stride_hc, stride_fb, stride_fc,
    # meta
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr,
):
    pid = tl.program_id(0)
    b = (pid // NUM_C_BLOCKS).to(tl.int64)
    chans = (pid % NUM_C_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)     # (BLOCK_C,)
    c_ok = chans < C
    sz, sr, sn, bz, br, bn = _film(film_ptr, b, chans, c_ok, C, stride_fb, stride_fc, ACC)
    gate_step = C * stride_gc
    # Σ_P da·s (→ dγ) and Σ_P da (→ dβ) per gate, (BLOCK_C,) each.
    dgam_z = tl.zeros((BLOCK_C,), ACC)
    dgam_r = tl.zeros((BLOCK_C,), ACC)
    dgam_n = tl.zeros((BLOCK_C,), ACC)
    dbet_z = tl.zeros((BLOCK_C,), ACC)
    dbet_r = tl.zeros((BLOCK_C,), ACC)
    dbet_n = tl.zeros((BLOCK_C,), ACC)
    for p0 in range(0, P, BLOCK_P):
        pos = p0 + tl.arange(0, BLOCK_P)                               # (BLOCK_P,)
        mask = c_ok[:, None] & (pos < P)[None, :]                      # (BLOCK_C, BLOCK_P)
        offs_g = b * stride_gb + chans[:, None] * stride_gc + pos[None, :]
        offs_h = b * stride_hb + chans[:, None] * stride_hc + pos[None, :]
        z, zc, r, rc, n, dn, s_z, s_r, s_n, ghn = _gates(gx_ptr, gh_ptr, offs_g, mask, gate_step,
                                                          sz, sr, sn, bz, br, bn, ACC)
        h = tl.load(h_ptr + offs_h, mask=mask, other=0.0).to(ACC)
        # g = 0 off the mask zeroes every da there, so padding adds nothing to the sums below.
        g = tl.load(grad_out_ptr + offs_h, mask=mask, other=0.0).to(ACC)
        da_z = g * (n - h) * z * zc
        da_n = g * z * dn
        ds_n = da_n * sn
        da_r = ds_n * ghn * r * rc
        ds_z = da_z * sz
        ds_r = da_r * sr
        dt_gx = d_gx_ptr.dtype.element_ty
        dt_gh = d_gh_ptr.dtype.element_ty
        tl.store(d_gx_ptr + offs_g, ds_z.to(dt_gx), mask=mask)
        tl.store(d_gx_ptr + offs_g + gate_step, ds_r.to(dt_gx), mask=mask)
        tl.store(d_gx_ptr + offs_g + 2 * gate_step, ds_n.to(dt_gx), mask=mask)
        tl.store(d_gh_ptr + offs_g, ds_z.to(dt_gh), mask=mask)
        tl.store(d_gh_ptr + offs_g + gate_step, ds_r.to(dt_gh), mask=mask)
        tl.store(d_gh_ptr + offs_g + 2 * gate_step, (ds_n * r).to(dt_gh), mask=mask)
        tl.store(d_h_ptr + offs_h, (g * zc).to(d_h_ptr.dtype.element_ty), mask=mask)
        dgam_z += tl.sum(da_z * s_z, axis=1)
        dgam_r += tl.sum(da_r * s_r, axis=1)
        dgam_n += tl.sum(da_n * s_n, axis=1)
        dbet_z += tl.sum(da_z, axis=1)
        dbet_r += tl.sum(da_r, axis=1)
        dbet_n += tl.sum(da_n, axis=1)
    row = d_film_ptr + b * stride_fb
    dt_f = d_film_ptr.dtype.element_ty
    tl.store(row + chans * stride_fc, dgam_z.to(dt_f), mask=c_ok)
    tl.store(row + (C + chans) * stride_fc, dgam_r.to(dt_f), mask=c_ok)
    tl.store(row + (2 * C + chans) * stride_fc, dgam_n.to(dt_f), mask=c_ok)
    tl.store(row + (3 * C + chans) * stride_fc, dbet_z.to(dt_f), mask=c_ok)
    tl.store(row + (4 * C + chans) * stride_fc, dbet_r.to(dt_f), mask=c_ok)
    tl.store(row + (5 * C + chans) * stride_fc, dbet_n.to(dt_f), mask=c_ok)


# TRITON_INTERPRET=1 at import turns @triton.jit into an interpreter object; see _dispatch.py.
INTERPRETED = not isinstance(_film_gru_fwd_kernel, JITFunction)


@dataclass(frozen=True)
class FilmGruConfig:
    block_c: int
    block_p: int
    num_warps: int = 4

    def __post_init__(self):
        for name in ("block_c", "block_p"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"FilmGruConfig.{name} must be a power of two, got {v}")


# The interpreter runs one numpy program at a time: small tiles so that the tests' C = 5, 17
# span several channel blocks (one partly masked) and 16x16 several position blocks.
INTERPRETER_CONFIG = FilmGruConfig(block_c=4, block_p=16)
# 256-element tiles. One channel at 2 warps: 4 elements a thread, one 16-byte load per fp32
# tile. Compiled for sm_90 (tests/test_kernels.py) the backward then holds 80 registers (fp32;
# fp64 162), where a 1024-element tile at 4 warps took 255 and ran 2 blocks per SM. Stacked
# channels (small H*W) take 4 warps: a (16, 16) tile held 168 registers at 2 warps, 94 at 4.
MAX_TILE = 256


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def gpu_config(b: int, c: int, p: int, num_sms: int) -> FilmGruConfig:
    """Tiles for CUDA, by shape only (fp32/fp16/bf16 alike: the math is fp32 in registers).

    BLOCK_P covers the model's 16x16 grid in one sweep (one channel a program there: 8,192
    programs at B = 64, C = 128); smaller grids stack channels up to MAX_TILE, halving them
    until there are two programs per SM. A first choice from register counts and that
    arithmetic, not a timed sweep: time it with bench/kernels.py on the target GPU.
    """
    block_p = min(triton.next_power_of_2(max(p, 1)), MAX_TILE)
    block_c = MAX_TILE // block_p
    while block_c > 1 and b * triton.cdiv(c, block_c) < 2 * num_sms:
        block_c //= 2
    return FilmGruConfig(block_c=block_c, block_p=block_p, num_warps=2 if block_c == 1 else 4)


def _check_inputs(tensors: dict[str, torch.Tensor]) -> None:
    device = tensors["h"].device
    for name, t in tensors.items():
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"film_gru_step: {name} must be one of {FLOAT_DTYPES}, got {t.dtype}")
        if t.device != device:
            raise ValueError(f"film_gru_step: {name} is on {t.device} but h on {device}")
        if INTERPRETED and t.dtype == torch.bfloat16:
            raise TypeError(f"film_gru_step: {name} is bfloat16, which the Triton interpreter lacks "
                            "(numpy has none); bf16 runs on CUDA only")
    if not INTERPRETED and device.type != "cuda":
        raise ValueError(f"film_gru_step: compiled Triton kernels need CUDA tensors, got {device}")


def _acc_dtype(tensors) -> tl.dtype:
    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def _setup(gx, gh, h, film, config):
    check_film_gru_shapes(gx, gh, h, film)
    b, c, hh, ww = h.shape
    p = hh * ww
    if config is None:
        config = INTERPRETER_CONFIG if INTERPRETED else gpu_config(b, c, p, _num_sms(h.device.index))
    num_c_blocks = triton.cdiv(c, config.block_c)
    device_ctx = torch.cuda.device(h.device) if h.device.type == "cuda" else contextlib.nullcontext()
    return config, p, num_c_blocks, (b * num_c_blocks,), device_ctx


def film_gru_step_triton(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor, film: torch.Tensor,
                         config: FilmGruConfig | None = None) -> torch.Tensor:
    """Launcher: gx, gh (B, 3C, H, W), h (B, C, H, W), film (B, 6C) -> h' (B, C, H, W) in h's dtype.

    Dtypes may differ per input (autocast hands in bf16 convolutions beside an fp32 state); the
    math is fp32, fp64 if any input is. `config` overrides the tiles (tests run GPU tiles
    in the interpreter).
    """
    _check_inputs({"gx": gx, "gh": gh, "h": h, "film": film})
    config, p, num_c_blocks, grid, device_ctx = _setup(gx, gh, h, film, config)
    gx, gh, h, film = gx.contiguous(), gh.contiguous(), h.contiguous(), film.contiguous()
    out = torch.empty_like(h)
    if out.numel() == 0:
        return out
    with device_ctx:  # launch on h's GPU, not the current one
        _film_gru_fwd_kernel[grid](
            gx, gh, h, film, out,
            h.shape[1], p, num_c_blocks,
            gx.stride(0), gx.stride(1), h.stride(0), h.stride(1), film.stride(0), film.stride(1),
            BLOCK_C=config.block_c, BLOCK_P=config.block_p, ACC=_acc_dtype((gx, gh, h, film)),
            num_warps=config.num_warps, enable_fp_fusion=True,  # pinned: Triton 3.10 flips the default
        )
    return out


def film_gru_step_backward_triton(grad_out: torch.Tensor, gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor,
                                  film: torch.Tensor, config: FilmGruConfig | None = None):
    """Launcher: grad_out (B, C, H, W) and the forward's inputs -> (d gx, d gh, d h, d film),
    each contiguous and in its input's dtype. Nothing is saved from the forward."""
    tensors = {"grad_out": grad_out, "gx": gx, "gh": gh, "h": h, "film": film}
    _check_inputs(tensors)
    if grad_out.shape != h.shape:
        raise ValueError(f"film_gru_step backward: grad_out is {tuple(grad_out.shape)}, h {tuple(h.shape)}")
    config, p, num_c_blocks, grid, device_ctx = _setup(gx, gh, h, film, config)
    grad_out, gx, gh, h, film = (t.contiguous() for t in (grad_out, gx, gh, h, film))  # expand()ed grads too
    d_gx, d_gh, d_h = torch.empty_like(gx), torch.empty_like(gh), torch.empty_like(h)
    if h.numel() == 0:  # an empty grid sums nothing: dγ = dβ = 0
        return d_gx, d_gh, d_h, torch.zeros_like(film)
    d_film = torch.empty_like(film)
    with device_ctx:
        _film_gru_bwd_kernel[grid](
            grad_out, gx, gh, h, film, d_gx, d_gh, d_h, d_film,
            h.shape[1], p, num_c_blocks,
            gx.stride(0), gx.stride(1), h.stride(0), h.stride(1), film.stride(0), film.stride(1),
            BLOCK_C=config.block_c, BLOCK_P=config.block_p, ACC=_acc_dtype(tensors.values()),
            num_warps=config.num_warps, enable_fp_fusion=True,
        )
    return d_gx, d_gh, d_h, d_film
