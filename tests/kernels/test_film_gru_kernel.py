"""The fused FiLM-ConvGRU step kernels against film_gru_step_ref, forward and every gradient.

Legend: B batch, C state channels, H W grid. Interpreted shapes stay tiny: the interpreter
runs each program in numpy, one at a time.

Tolerance (STYLE habit 7, ochre.kernels.testing.assert_within_torch_error): for h' and each
of d gx, d gh, d h, d film, the kernel's largest error against the reference evaluated in
fp64 is at most 2x the largest error of the reference (its autograd for the gradients) run in
the same dtype over REF_BATCH samples of the same (C, H, W), never below one ulp of the
largest value. Over 10 seeds of every test here the fp32 ratio stayed at or below 1.6;
fp16 errors are the final rounding, the same for both (ratio <= 0.5 against the ulp floor).
"""

from __future__ import annotations

import pytest
import torch
from kernel_env import needs_compiled_cuda

import ochre.kernels.film_gru_ops as film_ops
from ochre.kernels import INTERPRET, film_gru_step, film_gru_step_ref
from ochre.kernels.film_gru_triton import (
    INTERPRETER_CONFIG,
    FilmGruConfig,
    film_gru_step_backward_triton,
    film_gru_step_triton,
    gpu_config,
)
from ochre.kernels.testing import assert_within_torch_error

# (B, C, H, W): one element; C below and across the 4-channel block (C = 17: 5 blocks, the
# last holding 1); P = 15 inside one 16-position block; 16x16 the model's grid.
SHAPES = [(1, 1, 1, 1), (2, 5, 3, 5), (3, 17, 1, 1), (1, 17, 3, 5), (2, 5, 16, 16)]
# The interpreter's tiles (16x16: 16 position blocks); gpu_config's at 16x16 (1 channel x 256
# positions: 15 and 1 of 256 lanes live at P = 15 and 1); 8 channels (C = 5 partly masked).
CONFIGS = [INTERPRETER_CONFIG, FilmGruConfig(block_c=1, block_p=256), FilmGruConfig(block_c=8, block_p=32)]
FLOATS = [torch.float32, torch.float16]
NAMES = ("h'", "d gx", "d gh", "d h", "d film")
REF_BATCH = 32  # samples of each (C, H, W) over which torch's error is measured


def _inputs(shape, dtype, device, scale: float = 1.0, dtypes=None):
    """gx, gh, h, film, grad_out; pre-activations ~ N(0, scale^2), FiLM ~ N(0, 0.25)."""
    b, c, hh, ww = shape
    dtypes = dtypes or (dtype,) * 5
    t = [scale * torch.randn(b, 3 * c, hh, ww), scale * torch.randn(b, 3 * c, hh, ww), torch.randn(b, c, hh, ww),
         0.5 * torch.randn(b, 6 * c), torch.randn(b, c, hh, ww)]
    return [x.to(device=device, dtype=d) for x, d in zip(t, dtypes)]


def _reference(gx, gh, h, film, grad_out, dtype=None):
    """h' and the four gradients by autograd through the reference (in `dtype` if given)."""
    leaves = [x.detach().to(dtype or x.dtype).requires_grad_(True) for x in (gx, gh, h, film)]
    out = film_gru_step_ref(*leaves)
    return (out, *torch.autograd.grad(out, leaves, grad_out.to(dtype or grad_out.dtype)))


def _kernel(gx, gh, h, film, grad_out, config=None):
    return (film_gru_step_triton(gx, gh, h, film, config),
            *film_gru_step_backward_triton(grad_out, gx, gh, h, film, config))


def _check(inputs, config=None, b=None):
    """The kernel on the first b samples (all by default), the reference's error over all of them."""
    b = inputs[0].shape[0] if b is None else b
    got = _kernel(*(t[:b] for t in inputs), config)
    ref, exact = _reference(*inputs), _reference(*inputs, dtype=torch.float64)
    for name, g, r, e in zip(NAMES, got, ref, exact):
        assert g.dtype == r.dtype and g.is_contiguous(), name
        assert_within_torch_error(name, g, e[:b], r, e)
    return got


def _ids(v):
    if isinstance(v, FilmGruConfig):
        return f"c{v.block_c}-p{v.block_p}"
    return "x".join(map(str, v)) if isinstance(v, tuple) else None


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_forward_and_gradients_match_reference(shape, config, dtype, device):
    b, c, hh, ww = shape
    _check(_inputs((REF_BATCH, c, hh, ww), dtype, device), config, b)


@pytest.mark.parametrize("scale", [8.0, 100.0])
def test_saturated_gates(scale, device):
    # |a| up to ~400: the gates sit at 0 or 1 and tanh at ±1, with gradients down to e^-400.
    got = _check(_inputs((REF_BATCH, 5, 3, 5), torch.float32, device, scale=scale), b=4)
    assert all(bool(t.isfinite().all()) for t in got)


def test_mixed_dtypes_as_under_autocast(device):
    # fp16 convolution outputs beside an fp32 state and FiLM: math in fp32, results in each input's dtype.
    dtypes = (torch.float16, torch.float16, torch.float32, torch.float32, torch.float32)
    got = _check(_inputs((REF_BATCH, 5, 3, 5), None, device, dtypes=dtypes), b=4)
    assert [t.dtype for t in got] == [torch.float32, torch.float16, torch.float16, torch.float32, torch.float32]


def test_fp64_matches_the_fp64_reference(device):
    inputs = _inputs((2, 5, 3, 5), torch.float64, device)
    for name, g, e in zip(NAMES, _kernel(*inputs), _reference(*inputs)):
        torch.testing.assert_close(g, e, rtol=1e-13, atol=1e-13, msg=name)  # a few fp64 ulps


def test_gradcheck_fp64_through_the_kernels(monkeypatch, device):
    calls = []
    real = film_ops.film_gru_step_backward_triton
    monkeypatch.setattr(film_ops, "film_gru_step_backward_triton", lambda *a: calls.append(1) or real(*a))
    inputs = [x.requires_grad_(True) for x in _inputs((2, 5, 3, 5), torch.float64, device)[:4]]
    # fast_mode checks random projections u^T J v of the Jacobian: the full one takes ~2 minutes
    # interpreted; tests/test_kernels.py checks the full Jacobian on the torch path.
    assert torch.autograd.gradcheck(lambda *x: film_gru_step(*x, impl="triton"), inputs, fast_mode=True)
    assert calls


def test_strided_inputs_equal_contiguous_ones(device):
    gx, gh, h, film, grad_out = _inputs((2, 5, 3, 5), torch.float32, device)
    strided = (torch.cat([gx, gx], 1)[:, ::2], gh.to(memory_format=torch.channels_last),
               h.to(memory_format=torch.channels_last), torch.cat([film, film], 1)[:, 1::2])
    want = _kernel(*(t.contiguous() for t in strided), grad_out)
    got = _kernel(*strided, grad_out.expand(2, 5, 3, 5))          # a different-strided grad_out
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def test_backward_is_deterministic(device):
    # FiLM gradients are summed inside one program per (b, channel block): no atomics, same bits.
    inputs = _inputs((2, 5, 16, 16), torch.float32, device)
    first = film_gru_step_backward_triton(*inputs[4:], *inputs[:4])
    second = film_gru_step_backward_triton(*inputs[4:], *inputs[:4])
    assert all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("shape", [(0, 5, 3, 5), (2, 0, 3, 5), (2, 5, 0, 4)], ids=_ids)
def test_empty_shapes(shape, device):
    inputs = _inputs(shape, torch.float32, device)
    for name, g, r in zip(NAMES, _kernel(*inputs), _reference(*inputs)):
        assert g.shape == r.shape and torch.equal(g, r), name  # P = 0: d film is exactly 0


def test_launchers_reject_bad_inputs(device):
    gx, gh, h, film, grad_out = _inputs((2, 5, 3, 5), torch.float32, device)
    with pytest.raises(ValueError, match=r"gx must be \(2, 15, 3, 5\)"):
        film_gru_step_triton(gx[:, :14], gh, h, film)
    with pytest.raises(ValueError, match=r"film must be \(2, 30\)"):
        film_gru_step_triton(gx, gh, h, film[:, :20])
    with pytest.raises(TypeError, match="int64"):
        film_gru_step_triton(gx, gh, h.long(), film)
    with pytest.raises(ValueError, match="grad_out"):
        film_gru_step_backward_triton(grad_out[:1], gx, gh, h, film)
    with pytest.raises(ValueError, match="power of two"):
        FilmGruConfig(block_c=3, block_p=16)


@pytest.mark.skipif(not INTERPRET, reason="interpreter-only limitation")
def test_interpreter_bf16_falls_back_in_auto_and_raises_in_triton(device):
    gx, gh, h, film, _ = _inputs((2, 5, 3, 5), torch.bfloat16, device)
    assert torch.equal(film_gru_step(gx, gh, h, film), film_gru_step_ref(gx, gh, h, film))
    with pytest.raises(RuntimeError, match="no bfloat16"):
        film_gru_step(gx, gh, h, film, impl="triton")


def test_gpu_config_choices():
    # One channel x 256 positions at 16x16; small grids stack channels, unless that starves the 132 SMs.
    assert gpu_config(64, 128, 256, 132) == FilmGruConfig(block_c=1, block_p=256, num_warps=2)
    assert gpu_config(64, 128, 15, 132).block_c == 16
    assert gpu_config(8, 64, 15, 132).block_c == 1                  # 2 would launch 256 < 264 programs
    assert gpu_config(1, 1, 4096, 132).block_p == 256


@pytest.mark.gpu
@needs_compiled_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(8, 64, 16, 16), (64, 128, 16, 16), (3, 17, 5, 7)], ids=_ids)
def test_gpu_design_shapes(shape, dtype):
    _check(_inputs(shape, dtype, torch.device("cuda")))
