"""Checks shared by the kernel tests and the benchmark: is an index the nearest code, up to
a rounding bound that the fp32 arithmetic of the kernel provably stays within? And, for
kernels whose rounding has no such simple bound, is their error within ~2x the reference's
(assert_within_torch_error)?

Legend: N vectors, D code dim, K codebook size.

The kernel computes s_k = ||e_k||^2 - 2 z.e_k in fp32 (||z||^2 is dropped: the same for
every k). With unit roundoff u, a D-term fp32 dot product in any summation order is off
by at most gamma_D * sum_i |z_i e_ki|, gamma_n = n u / (1 - n u) (Higham, Accuracy and
Stability, 3.1); ||e||^2 likewise, and the final subtraction adds one rounding, so

    |s~_k - s_k| <= gamma_{D+2} * (||e_k||^2 + 2 sum_i |z_i e_ki|) =: b_k.

We take u = 2^-23, twice the round-to-nearest 2^-24, because tensor cores (the fp16/bf16
path) accumulate in fp32 with truncation rather than rounding to nearest. fp16/bf16 inputs
are exact in fp32 and so are their products, so the same bound holds. A correct kernel
that returns k^ saw s~_k^ <= s~_k* (k* the fp64 argmin), hence d(k^) - d(k*) <= b_k^ + b_k*:
that is what `wrong` counts violations of.
The reference (torch.cdist's matmul form: ||z||^2 and ||e||^2 each within gamma_D, then one
(D+2)-term dot [-2z, ||z||^2, 1].[e, 1, ||e||^2], then sqrt) is bounded, on the squared
scale, by gamma_{2D+5} * (||z||^2 + ||e_k||^2 + 2 sum_i |z_i e_ki|).
"""

from __future__ import annotations

import torch

_U = 2.0 ** -23


def _gamma(n: int) -> float:
    return n * _U / (1 - n * _U)


def _bounds(z64: torch.Tensor, e64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact fp64 squared distances, the kernel's error bound and the reference's: each (n, K)."""
    d = z64.shape[1]
    dist = torch.cdist(z64, e64, compute_mode="donot_use_mm_for_euclid_dist").square()    # (n, K)
    e_sq, abs_dot = e64.square().sum(1)[None, :], 2 * z64.abs() @ e64.abs().T              # (1, K), (n, K)
    kernel = _gamma(d + 2) * (e_sq + abs_dot)
    reference = _gamma(2 * d + 5) * (z64.square().sum(1, keepdim=True) + e_sq + abs_dot)
    return dist, kernel, reference


def _take(t: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    return t.gather(1, i[:, None]).squeeze(1)                                                # (n,)


def check_nearest_code(idx: torch.Tensor, z: torch.Tensor, codebook: torch.Tensor,
                       ref: torch.Tensor | None = None, chunk: int = 4096) -> dict:
    """Compare indices from a kernel (and optionally the reference) with an fp64 search.

    Returns counts: `wrong` rows where idx is farther from z than the fp32 bound allows;
    `clear` rows whose nearest code beats every other by more than both bounds (there idx
    and ref must both equal the fp64 argmin); `clear_mismatch` clear rows where they do not;
    and `examples`, up to 5 offending rows with their distances and bounds.
    """
    n, k = z.shape[0], codebook.shape[0]
    if idx.shape != (n,) or idx.dtype != torch.int64:
        raise AssertionError(f"indices must be ({n},) int64, got {tuple(idx.shape)} {idx.dtype}")
    if n and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise AssertionError(f"indices outside [0, {k}): min {int(idx.min())}, max {int(idx.max())}")
    e64 = codebook.detach().double()
    out = {"rows": n, "wrong": 0, "clear": 0, "clear_mismatch": 0, "examples": []}
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n), device=z.device)
        dist, b, r = _bounds(z.detach()[rows].double(), e64)                                   # (n, K) each
        got = idx[rows].to(z.device)
        best = dist.argmin(1)                                                                 # (n,)
        excess = _take(dist, got) - _take(dist, best)
        wrong = excess > _take(b, got) + _take(b, best)
        # Clear: for every k != best, d_k - d_best exceeds both methods' error at k and best.
        margin = dist - (b + r) - (_take(dist, best) + _take(b, best) + _take(r, best))[:, None]
        margin.scatter_(1, best[:, None], float("inf"))
        clear = margin.min(1).values > 0
        mismatch = clear & (got != best)
        if ref is not None:
            mismatch |= clear & (ref[rows].to(z.device) != best)
        out["wrong"] += int(wrong.sum())
        out["clear"] += int(clear.sum())
        out["clear_mismatch"] += int(mismatch.sum())
        for i in (wrong | mismatch).nonzero().flatten().tolist()[: 5 - len(out["examples"])]:
            g, t = int(got[i]), int(best[i])
            out["examples"].append({"row": start + i, "idx": g, "fp64_argmin": t,
                                    "ref": None if ref is None else int(ref[start + i]),
                                    "d_idx": float(dist[i, g]), "d_min": float(dist[i, t]),
                                    "bound": float(b[i, g] + b[i, t])})
    return out


def assert_nearest_code(idx: torch.Tensor, z: torch.Tensor, codebook: torch.Tensor,
                        ref: torch.Tensor | None = None, min_clear: float = 0.9) -> dict:
    """check_nearest_code, raising with the offending rows unless every row is within the
    bound, every clear row matches, and at least `min_clear` of the rows are clear (so a
    test cannot pass by having only near-ties)."""
    res = check_nearest_code(idx, z, codebook, ref)
    n = res["rows"]
    if res["wrong"] or res["clear_mismatch"] or res["clear"] < min_clear * n:
        raise AssertionError(f"nearest_code: {res['wrong']}/{n} rows beyond the fp32 bound, "
                             f"{res['clear_mismatch']} clear rows differ from the fp64 argmin, "
                             f"{res['clear']}/{n} clear (need {min_clear:.0%}); "
                             f"examples: {res['examples']}")
    return res


def assert_within_torch_error(name: str, got: torch.Tensor, exact: torch.Tensor, ref: torch.Tensor,
                              ref_exact: torch.Tensor | None = None, factor: float = 2.0) -> dict:
    """Habit 7: the kernel's largest error against exact (fp64) values is at most `factor` times
    the reference's, both computed in got's dtype; raise naming where they disagree most.

    `ref` may be a larger sample of the same computation (`ref_exact` its exact values): over a
    handful of elements the largest torch error is mostly luck (an exact hit, or no cancellation
    where the kernel met one). For the FiLM-GRU step over 40 seeds at 1-255 elements the ratio
    reached 3.7 against the same elements and 1.15 against 32 samples of them.
    The baseline never drops below one ulp of the largest exact value (finfo.eps * max|exact|):
    storing a result alone may round it by half an ulp.
    """
    ref_exact = exact if ref_exact is None else ref_exact
    if got.shape != exact.shape or got.dtype != ref.dtype or ref.shape != ref_exact.shape:
        raise AssertionError(f"{name}: got {tuple(got.shape)} {got.dtype} for exact {tuple(exact.shape)}, "
                             f"reference {tuple(ref.shape)} {ref.dtype} for exact {tuple(ref_exact.shape)}")
    exact, ref_exact = exact.detach().double(), ref_exact.detach().double()
    err = (got.detach().double() - exact).abs()
    ref_err = (ref.detach().double() - ref_exact).abs()
    scale = float(ref_exact.abs().max()) if ref_exact.numel() else 0.0
    res = {"err": float(err.max()) if err.numel() else 0.0,
           "ref_err": float(ref_err.max()) if ref_err.numel() else 0.0,
           "floor": torch.finfo(got.dtype).eps * scale}
    res["bound"] = factor * max(res["ref_err"], res["floor"])
    if not res["err"] <= res["bound"]:  # also catches NaN
        worst = int(err.nan_to_num(float("inf")).flatten().argmax())
        at = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), got.shape))
        over = int((~(err <= res["bound"])).sum())
        raise AssertionError(f"{name} ({got.dtype}): max error {res['err']:.3g} > {factor} x "
                             f"max(reference error {res['ref_err']:.3g}, one ulp {res['floor']:.3g}); "
                             f"{over}/{err.numel()} elements over; worst at {at}: got "
                             f"{float(got.flatten()[worst]):.8g}, exact {float(exact.flatten()[worst]):.8g}")
    return res
