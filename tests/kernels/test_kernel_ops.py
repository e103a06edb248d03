"""The torch.library ops over the real kernels: dispatch, registration checks, torch.compile."""

from __future__ import annotations

import pytest
import torch

import ochre.kernels.film_gru_ops as film_ops
import ochre.kernels.ops as ops
from ochre.kernels import codebook_lookup, film_gru_step, nearest_code, nearest_code_ref


def _spy_module(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **kw: calls.append(name) or real(*a, **kw))
    return calls


def _spy(monkeypatch, name: str) -> list:
    return _spy_module(monkeypatch, ops, name)


def test_ops_dispatch_to_the_triton_kernels(monkeypatch, device):
    calls = _spy(monkeypatch, "nearest_code_triton")
    lookup_calls = _spy(monkeypatch, "codebook_lookup_triton")
    backward_calls = _spy(monkeypatch, "codebook_lookup_backward_triton")
    z = torch.randn(37, 13, device=device)
    codebook = torch.randn(71, 13, device=device, requires_grad=True)
    idx = nearest_code(z, codebook)
    codebook_lookup(idx, codebook).sum().backward()
    assert torch.equal(idx, nearest_code_ref(z, codebook))
    assert (len(calls), len(lookup_calls), len(backward_calls)) == (1, 1, 1)


def test_opcheck(device):
    z = torch.randn(37, 13, device=device)
    codebook = torch.randn(71, 13, device=device, requires_grad=True)
    codes = torch.randint(0, 71, (5, 9), device=device)
    grad_out = torch.randn(5, 9, 13, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.ochre.nearest_code, (z, codebook.detach()))
    torch.library.opcheck(torch.ops.ochre.codebook_lookup, (codes, codebook))
    torch.library.opcheck(torch.ops.ochre.codebook_lookup_backward, (grad_out, codes, 71))


def _vq(z: torch.Tensor, codebook: torch.Tensor):
    """A tokenizer's use of both ops: quantise, straight-through to z, codebook loss."""
    idx = nearest_code(z, codebook)                                   # (N,)
    zq = codebook_lookup(idx, codebook)                               # (N, D)
    loss = (zq - z.detach()).square().mean()
    return z + (zq - z).detach(), loss, idx


@pytest.mark.parametrize("n", [37, 50])  # the second call reuses the graph with a new N
def test_compile_fullgraph_runs_the_kernels(n, device):
    z = torch.randn(n, 13, device=device, requires_grad=True)
    codebook = torch.randn(71, 13, device=device, requires_grad=True)
    # aot_eager traces the fakes and the autograd registration like inductor does, without
    # inductor's codegen (tests/test_kernels.py compiles with inductor on the torch path).
    compiled = torch.compile(_vq, fullgraph=True, backend="aot_eager", dynamic=True)
    zq, loss, idx = compiled(z, codebook)
    (zq.sum() + loss).backward()
    grads = z.grad.clone(), codebook.grad.clone()
    z.grad = codebook.grad = None
    zq_e, loss_e, idx_e = _vq(z, codebook)
    (zq_e.sum() + loss_e).backward()
    assert torch.equal(idx, idx_e) and torch.equal(zq, zq_e)
    torch.testing.assert_close(loss, loss_e, rtol=0, atol=0)
    assert torch.equal(grads[0], z.grad)
    # On CUDA the atomic scatter-add may sum repeated codes in another order: a few ulps
    # (gamma_c * sum|g| for c <= 50 repeats), well inside fp32 assert_close (rtol 1.3e-6).
    torch.testing.assert_close(grads[1], codebook.grad)


# ---- ochre::film_gru_step and its backward ---------------------------------------------------

def _film_gru_inputs(device, b=2, c=5, hh=3, ww=5):
    """gx, gh (B, 3C, H, W), h (B, C, H, W), film (B, 6C), all requiring grad."""
    shapes = [(b, 3 * c, hh, ww), (b, 3 * c, hh, ww), (b, c, hh, ww), (b, 6 * c)]
    return [torch.randn(s, device=device, requires_grad=True) for s in shapes]


def test_film_gru_ops_dispatch_to_the_triton_kernels(monkeypatch, device):
    from ochre.kernels import film_gru_step_ref

    calls = _spy_module(monkeypatch, film_ops, "film_gru_step_triton")
    backward_calls = _spy_module(monkeypatch, film_ops, "film_gru_step_backward_triton")
    inputs = _film_gru_inputs(device)
    out = film_gru_step(*inputs)
    out.square().sum().backward()
    torch.testing.assert_close(out, film_gru_step_ref(*inputs))  # fp32, other transcendental formulas
    assert all(t.grad is not None for t in inputs)
    assert (len(calls), len(backward_calls)) == (1, 1)


def test_film_gru_opcheck(device):
    inputs = _film_gru_inputs(device)
    torch.library.opcheck(torch.ops.ochre.film_gru_step, inputs)
    grad_out = torch.randn(2, 5, 3, 5, device=device)
    torch.library.opcheck(torch.ops.ochre.film_gru_step_backward, (grad_out, *(t.detach() for t in inputs)))


def _two_steps(gx, gh, h, film):
    """Two recurrent steps sharing gx, gh and film: the second step's h is the first's output."""
    h1 = film_gru_step(gx, gh, h, film)
    return film_gru_step(gx, gh, h1, film).square().mean()


def test_film_gru_compile_fullgraph_runs_the_kernels(device):
    inputs = _film_gru_inputs(device)
    compiled = torch.compile(_two_steps, fullgraph=True, backend="aot_eager")
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, inputs)
    loss_e = _two_steps(*inputs)
    grads_e = torch.autograd.grad(loss_e, inputs)
    assert torch.equal(loss, loss_e)  # the same kernels on the same inputs
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_e))
