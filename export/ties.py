"""Which token disagreements between two backends are near-ties, and so allowed.

Legend: B players, K codebook size, k top-k, h w token grid, N vectors, D code dim.

Two correct compilations of one graph round differently (another summation order, vectorised
exp), about 1e-6 relative in fp32. A sampled token flips only where the draw sits that close to
a decision boundary: the noise u against a CDF step of the top-k, two logits swapping places in
the top-k order, or (argmax, and the encoder's nearest-code search) two candidates within
rounding. These helpers measure that distance from the reference's own numbers, so a parity
check can count the flips it allows instead of loosening a tolerance.
"""

from __future__ import annotations

import torch

from ochre.models.sampling import SamplingConfig

# Distance below which a decision counts as a near-tie: 1e-4 on probabilities and logits, a
# hundred times the ~1e-6 that compilations of the same fp32 graph differ by.
TIE_TOL = 1e-4


def decision_gaps(logits: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each position's draw in `ochre.models.sampling.sample_tokens` is from another outcome,
    by the two ways it can change: logits (B, K, h, w), u (B, h, w) -> (order, step), (B, h, w) each,
    in fp64.
      order  logit units: the smallest gap between consecutive logits of the top k+1 (a swap there
             changes which code sits at an index of the top k, or at k = 1 the argmax itself);
             inf over the whole distribution, which is in code order
      step   probability units: the distance of the threshold u·cdf_last from the nearest CDF step
             (softmax at the temperature over the top k); inf at argmax"""
    logits = logits.double()
    K = logits.shape[1]
    k = 1 if cfg.temperature == 0 or cfg.top_k == 1 else min(cfg.top_k, K)
    if k >= K:
        vals, order = logits, torch.full_like(logits[:, 0], torch.inf)
    else:
        vals = logits.topk(k + 1, dim=1).values                                      # (B, k+1, h, w)
        order = (vals[:, :-1] - vals[:, 1:]).amin(dim=1)
    if k == 1:
        return order, torch.full_like(order, torch.inf)
    cdf = torch.softmax(vals[:, :k] / cfg.temperature, dim=1).cumsum(dim=1)        # (B, k, h, w)
    return order, (cdf[:, :-1] - u.double()[:, None] * cdf[:, -1:]).abs().amin(dim=1)


def sampling_margin(logits: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """logits (B, K, h, w), u (B, h, w) -> (B, h, w): how far each position's draw is from another
    outcome, in either unit (decision_gaps), for a near-tie threshold such as TIE_TOL."""
    return torch.minimum(*decision_gaps(logits, u, cfg))


def code_margin(z: torch.Tensor, codebook: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z (N, D), codebook (K, D), two candidate codes a, b (N,) -> (N,): |d(z, e_a) − d(z, e_b)|
    relative to the distance, in fp64 (a nearest-code disagreement is a near-tie when small)."""
    z, codebook = z.double(), codebook.double()
    da = (z - codebook[a]).square().sum(dim=1)
    db = (z - codebook[b]).square().sum(dim=1)
    return (da - db).abs() / (1.0 + da.minimum(db))


def count_flips(expected: torch.Tensor, got: torch.Tensor, margin: torch.Tensor, tol: float = TIE_TOL) -> dict:
    """Token disagreements split into near-ties (margin < tol) and real ones."""
    differ = expected != got
    return {"tokens": int(expected.numel()), "differ": int(differ.sum()),
            "near_ties": int((differ & (margin < tol)).sum()), "bad": int((differ & (margin >= tol)).sum())}
