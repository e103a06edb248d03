"""The gather kernel and its scatter-add backward against codebook[codes] and its autograd.

Legend: M looked-up codes, D code dim, K codebook size.
"""

from __future__ import annotations

import pytest
import torch
from kernel_env import needs_compiled_cuda

from ochre.kernels import codebook_lookup, codebook_lookup_ref
from ochre.kernels.codebook_lookup_triton import (
    codebook_lookup_backward_triton,
    codebook_lookup_triton,
)

K = 71


def _ref_grad(codes: torch.Tensor, codebook: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """The reference gradient: autograd through codebook[codes]."""
    leaf = codebook.detach().clone().requires_grad_(True)
    codebook_lookup_ref(codes, leaf).backward(grad_out)
    return leaf.grad


def _sum_bound(codes: torch.Tensor, grad_out: torch.Tensor, k: int, u: float) -> torch.Tensor:
    """Worst-case error of summing each code's rows in any order, (K, D): gamma_c * sum |g|
    with c the code's count (Higham 4.2: c - 1 additions after the first term)."""
    d = grad_out.shape[-1]
    flat = codes.reshape(-1).long()
    count = torch.bincount(flat, minlength=k).double()                               # (K,)
    gamma = (count * u / (1 - count * u))[:, None]                                   # (K, 1)
    abs_sum = torch.zeros(k, d, dtype=torch.float64, device=grad_out.device)
    abs_sum.index_add_(0, flat, grad_out.reshape(-1, d).double().abs())
    return gamma * abs_sum


@pytest.mark.parametrize("code_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8, torch.uint16], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("codes_shape,d", [((5, 9), 13), ((37,), 3), ((2, 3, 4), 64), ((), 13), ((1,), 1)],
                         ids=["5x9-d13", "37-d3", "2x3x4-d64", "scalar-d13", "1-d1"])
def test_forward_equals_reference(codes_shape, d, dtype, code_dtype, device):
    codebook = torch.randn(K, d, device=device).to(dtype)
    codes = torch.randint(0, K, codes_shape, device=device).to(code_dtype)
    out = codebook_lookup(codes, codebook, impl="triton")
    assert out.shape == (*codes_shape, d) and out.dtype == dtype
    assert torch.equal(out, codebook_lookup_ref(codes, codebook))  # a copy: exact


def test_forward_strided_inputs_and_out_of_range_codes(device):
    codebook = torch.randn(13, K, device=device).T               # (K, 13), strides (1, K)
    codes = torch.randint(0, K, (10, 12), device=device)[:, ::3]  # (10, 4), not contiguous
    assert torch.equal(codebook_lookup_triton(codes, codebook), codebook_lookup_ref(codes, codebook))
    # Documented: the Triton path cannot check bounds without a sync, so it reads nothing
    # for a bad code and returns a zero row (the torch path raises instead).
    bad = torch.tensor([K, -1, 2], device=device)
    out = codebook_lookup_triton(bad, codebook)
    assert torch.equal(out[:2], torch.zeros(2, 13, device=device))
    assert torch.equal(out[2], codebook[2])


@pytest.mark.parametrize("codes_kind", ["random", "few_codes", "one_code"])
def test_backward_exact_on_dyadic_values(codes_kind, device):
    # Multiples of 1/8 below 2^12 in magnitude add exactly in fp32 in any order, so the
    # atomic scatter-add must equal the reference bit for bit: a lost or doubled update
    # (the failure mode of a bad atomic) would show.
    m, d = 300, 13
    codes = {"random": torch.randint(0, K, (m,)), "few_codes": torch.randint(0, 4, (m,)),
             "one_code": torch.full((m,), 7)}[codes_kind].to(device).view(20, 15)
    codebook = torch.randn(K, d, device=device, requires_grad=True)
    grad_out = torch.randint(-64, 65, (20, 15, d), device=device).float() / 8
    codebook_lookup(codes, codebook, impl="triton").backward(grad_out)
    assert torch.equal(codebook.grad, _ref_grad(codes, codebook, grad_out))


def test_backward_fp32_within_summation_bound(device):
    m, d = 400, 13
    codes = torch.randint(0, 5, (m,), device=device)             # ~80 repeats per code
    grad_out = torch.randn(m, d, device=device)
    got = codebook_lookup_backward_triton(grad_out, codes, K)
    exact = _ref_grad(codes, torch.zeros(K, d, dtype=torch.float64, device=device), grad_out.double())
    bound = _sum_bound(codes, grad_out, K, 2.0 ** -24)  # fp32 atomics round to nearest
    err = (got.double() - exact).abs()
    assert (err <= bound).all(), f"max err {err.max():.3g}, at {(err - bound).argmax()}"
    assert torch.equal(got[5:], torch.zeros(K - 5, d, device=device))  # unused codes get exactly 0


def test_backward_fp16_accumulates_in_fp32(device):
    m, d = 400, 13
    codes = torch.randint(0, 3, (m,), device=device)             # ~130 repeats per code
    grad_out = torch.randn(m, d, device=device).half()
    got = codebook_lookup_backward_triton(grad_out, codes, K)
    assert got.dtype == torch.float16
    exact = _ref_grad(codes, torch.zeros(K, d, dtype=torch.float64, device=device), grad_out.double())
    # fp32 sum (bound as above) then one rounding to fp16 (relative 2^-11).
    bound = _sum_bound(codes, grad_out, K, 2.0 ** -24) + exact.abs() * 2.0 ** -11
    err = (got.double() - exact).abs()
    assert (err <= bound).all(), f"max err {err.max():.3g}"
    if device.type == "cpu":
        # ...which beats the fp16 reference on CPU, whose index_put_ rounds after every one of
        # ~130 adds (on CUDA index_put_ also accumulates in fp32).
        ref_err = (_ref_grad(codes, torch.zeros(K, d, device=device).half(), grad_out).double() - exact).abs()
        assert err.max() <= ref_err.max()


def test_backward_expanded_grad_and_gradient_to_codebook_only(device):
    codes = torch.randint(0, K, (5, 9), device=device)
    codebook = torch.randn(K, 13, device=device, requires_grad=True)
    out = codebook_lookup(codes, codebook, impl="triton")
    out.sum().backward()                                          # grad_out is expand()ed: strides 0
    assert torch.equal(codebook.grad, _ref_grad(codes, codebook, torch.ones(5, 9, 13, device=device)))


def test_backward_rejects_mismatched_shapes(device):
    with pytest.raises(ValueError, match="does not match"):
        codes = torch.zeros(6, dtype=torch.long, device=device)
        codebook_lookup_backward_triton(torch.randn(5, 13, device=device), codes, K)
    with pytest.raises(TypeError, match="integer"):
        codebook_lookup_triton(torch.zeros(3, device=device), torch.randn(K, 13, device=device))


@pytest.mark.gpu
@needs_compiled_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_large_lookup_and_grad(dtype):
    k, d, m = 2048, 64, 65536
    codebook = torch.randn(k, d, device="cuda").to(dtype).requires_grad_(True)
    codes = torch.randint(0, 64, (m,), device="cuda").view(256, 256)  # contention: ~1000 rows per code
    out = codebook_lookup(codes, codebook, impl="triton")
    assert torch.equal(out, codebook_lookup_ref(codes, codebook))
    grad_out = torch.randn(256, 256, d, device="cuda").to(dtype)
    out.backward(grad_out)
    exact = _ref_grad(codes, torch.zeros(k, d, dtype=torch.float64, device="cuda"), grad_out.double())
    final = 0.0 if dtype == torch.float32 else 2.0 ** -8  # bf16: one rounding of the fp32 sum
    bound = _sum_bound(codes, grad_out, k, 2.0 ** -24) + exact.abs() * final
    assert ((codebook.grad.double() - exact).abs() <= bound).all()
