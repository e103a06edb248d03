"""Decoding the dynamics model's distribution into codes: the samplers the live step
(ochre.models.step) and the training unroll call.

Legend: B batch, K codebook size, k top-k, h w token grid.

Sampling is inverse-CDF over the top-k codes of each position (all K in code order when
top_k >= K), driven by a uniform noise input u (B, h, w): the same noise gives the same codes
on every backend (no RNG inside the graph, no host round trip), and it exports as
Softmax/CumSum/Gather. Temperature 0 is argmax, the earlier prototype's decoding, which
regresses to the mean code and blurs (docs/metrics.md: `code_usage@256`, `grad_ratio@256`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ochre.choices import GUIDES
from ochre.models.dynamics import first_proposals


@dataclass
class SamplingConfig:
    # The whole distribution at T 1, with the copy prior's proposals boosted. A gate trained on exact
    # code matches undervalues a copy that looks right (most codes change across a turn although the
    # copied patch is right), and top-k starves the tail that long dreams draw new codes from; the
    # boost restores continuity without the argmax that collapses. A step forward changes most of the
    # view, so only `walk_boost` of the boosts is kept while a movement key is held. The values are
    # chosen on `val` by bench/decoding_sweep.py with its realism guard (bench/results/
    # decoding_sweep_cpu_2026-12-03_realism.json: the default demo's model; 9/7, the earlier default,
    # failed the detail guard, and 15/4, chosen before realism was guarded, failed c2st@129-256 on val).
    # A lower temperature with no boost turns as well but blurs long dreams (T 0.3: grad_ratio@256 0.39 on val;
    # bench/results/decoding_sweep_cpu_2026-12-04_temperature.json).
    temperature: float = 1.0    # 0: argmax
    top_k: int = 2048           # codes considered per position (>= K: the whole distribution)
    guidance: float = 1.0       # action guidance w: uncond + w·(cond − uncond); 1 = plain conditional
    guide: str = "all"          # what guidance extrapolates: "all", the whole distribution; "head", the head's
                                # codes alone (the copy gate and its proposals stay the conditional branch's)
    copy_boost: float = 15.0    # logits added to the copy prior's proposals (models with copy_bias)
    fill_boost: float = 5.5     # ... and to its fills of the positions a turn reveals
    walk_boost: float = 0.5     # share of both boosts kept while a movement key is held
    min_p: float = 0.0          # codes less likely than min_p x the position's likeliest are not drawn (0: none)

    def __post_init__(self):
        if self.temperature < 0 or self.top_k < 1 or self.guidance < 0 or self.copy_boost < 0 or self.fill_boost < 0 \
                or not 0 <= self.walk_boost <= 1 or not 0 <= self.min_p < 1 or self.guide not in GUIDES:
            raise ValueError(f"need temperature >= 0, top_k >= 1, guidance >= 0, boosts >= 0, walk_boost in "
                             f"[0, 1], min_p in [0, 1), guide in {GUIDES}; got {self}")

    @property
    def boosts(self) -> tuple[float, float, float]:
        return (self.copy_boost, self.fill_boost, self.walk_boost)

    @classmethod
    def argmax(cls) -> SamplingConfig:
        return cls(temperature=0.0, top_k=1, guidance=1.0)


def sample_tokens(logits: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """logits (B, K, h, w), u (B, h, w) uniform in [0, 1) -> codes (B, h, w) int64."""
    if cfg.temperature == 0 or cfg.top_k == 1:
        return logits.argmax(dim=1)
    K = logits.shape[1]
    if cfg.top_k >= K:                     # the whole distribution, in code order: no sort needed
        return _inverse_cdf(logits.float(), u, cfg)
    vals, idx = logits.float().topk(cfg.top_k, dim=1)                               # (B, k, h, w), sorted
    return idx.gather(1, _inverse_cdf(vals, u, cfg)[:, None])[:, 0]


BLOCK = 64         # codes per block of the two-level inverse CDF


def _inverse_cdf(vals: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """The index j (B, h, w) along dim 1 of vals (B, n, h, w) that u (B, h, w) picks from softmax(vals / T):
    the first j whose cumulative probability exceeds u.

    Along the last axis of a channels-last view (the model computes its logits channels-last, so the
    view is contiguous; Dynamics.head_logits). In two levels when n is a multiple of BLOCK: the
    block whose running total first exceeds u·total, then the code inside it, so the prefix sums
    run over n / BLOCK block totals and BLOCK codes instead of all n (a scan over 2,048 codes per
    position was the largest single kernel of a compiled CPU step after the convolutions). In
    exact arithmetic the same draw as one scan over all n; in floating point the two differ only
    where u falls within rounding of a CDF step (a near-tie, export/ties.py)."""
    x = vals.movedim(1, -1) / cfg.temperature                                       # (B, h, w, n)
    p = torch.exp(x - x.amax(dim=-1, keepdim=True))                                 # unnormalised, max 1
    if cfg.min_p > 0:
        p = torch.where(p >= cfg.min_p, p, torch.zeros_like(p))                    # the tail cut: min-p
    n = p.shape[-1]
    if n % BLOCK or n < 2 * BLOCK:
        cdf = p.cumsum(dim=-1)
        # The first j with cdf_j > u·cdf_last; scaling u by the last entry absorbs its rounding.
        return (cdf < u[..., None] * cdf[..., -1:]).sum(dim=-1).clamp_max(n - 1)
    blocks = p.unflatten(-1, (n // BLOCK, BLOCK))                                  # (B, h, w, n/BLOCK, BLOCK)
    return _two_level(blocks.sum(dim=-1), lambda b: _block(blocks, b), u)


def _block(blocks: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Block b (..., 1) of blocks (..., n/BLOCK, BLOCK) -> (..., BLOCK)."""
    return blocks.gather(-2, b[..., None].expand(*b.shape[:-1], 1, blocks.shape[-1]))[..., 0, :]


def _two_level(mass: torch.Tensor, weights, u: torch.Tensor) -> torch.Tensor:
    """The inverse CDF in two levels: mass (B, h, w, n/BLOCK) the blocks' totals, weights(b) the
    BLOCK weights (B, h, w, BLOCK) of block b (B, h, w, 1), u (B, h, w) -> the index (B, h, w) of
    the first code whose running total exceeds u · total."""
    run = mass.cumsum(dim=-1)
    target = u[..., None] * run[..., -1:]                                          # (B, h, w, 1)
    b = (run < target).sum(dim=-1, keepdim=True).clamp_max(mass.shape[-1] - 1)     # the block
    before = (run - mass).gather(-1, b)                                            # mass ahead of it
    j = (weights(b).cumsum(dim=-1) < target - before).sum(dim=-1).clamp_max(BLOCK - 1)
    return b[..., 0] * BLOCK + j


def samples_factors(cfg: SamplingConfig, K: int) -> bool:
    """Whether sample_mixture draws from the mixture's factors for this decoding and K codes (else
    it samples the materialised log-probabilities with sample_tokens)."""
    return cfg.temperature == 1 and cfg.top_k >= K and cfg.min_p == 0 and K % BLOCK == 0 and K >= 2 * BLOCK


def sample_mixture(mixture, u: torch.Tensor, cfg: SamplingConfig,
                   logits: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """sample_tokens(mixture.log_probs(), u, cfg) from the factors of the copy prior's mixture
    (ochre.models.dynamics.Mixture), without its (B, h, w, K) log-probabilities in memory:
    mixture, u (B, h, w) -> codes (B, h, w) int64, and the log-probabilities (B, h, w, K) if
    `logits` (else None).

    Every code but the proposal p has log-probability z − shift (Mixture.proposal), so the two-level
    CDF's block totals are one pass of exp(z − max z) over the codes, which also gives logsumexp(z):
    shift and p's log-probability follow per position, and only the one block the draw lands in is
    exponentiated again. sample_tokens on log_probs() exponentiates every code twice (the
    normalisation, then the sampler's softmax) and keeps both (B, h, w, K) tensors; a compiled
    2-core CPU step spent 0.38 ms on them at batch 1 in bf16, and 0.13 ms here. In exact arithmetic
    the same draw; in floating point they differ only at near-ties (export/ties.py). At temperature
    1 over the whole distribution (the default); otherwise (samples_factors), it samples log_probs()
    with sample_tokens."""
    z = mixture.z
    codes = mixture.candidates()                                                   # (B, h, w, n) proposals
    K = z.shape[-1]
    if not samples_factors(cfg, K):
        lp = mixture.log_probs()
        return sample_tokens(lp.movedim(-1, 1), u, cfg), lp if logits else None
    m = z.detach().amax(dim=-1, keepdim=True)                                      # (B, h, w, 1)
    zp = z.gather(-1, codes)                                                       # the proposals' head logits
    # A code proposed by several neighbours (a learned pointer) counts once in each sum below.
    once = first_proposals(codes).to(z.dtype) if codes.shape[-1] > 1 else None
    # exp(z − m) of every code but the proposals, per block. Eager: their entries zeroed in place (a
    # scatter, not a (B, h, w, K) comparison and select: the same numbers, and the eager step is spared
    # two passes over them). In a compiled or exported graph the comparison and select instead: they fuse
    # with the exponential into the block sums, which read each row of z once and store nothing of size
    # K, where the scatter made the compiler store every exponential (2 MB a player) and read it
    # again. The shipped model's native step on 2 cores (bench/results/live_cpu_2026-12-04_blocksum_ab.json):
    # under ochre's allocator settings within 3 % at batch 1 and 8 (bf16 at 8: 8.80 -> 8.56 ms);
    # under glibc's defaults, as a program that imports ochre runs, fp32 1.92 ms at batch 1 instead of
    # 3.11 and 13.4 at batch 8 instead of 23.1 (the stored exponentials' pages faulted in every step).
    ez = (z - m).exp()
    if torch.compiler.is_compiling():
        ar = torch.arange(K, device=z.device)
        proposed = ar == codes[..., 0, None]
        for j in range(1, codes.shape[-1]):
            proposed = proposed | (ar == codes[..., j, None])
        ez = torch.where(proposed, 0.0, ez)
    else:
        ez = ez.scatter_(-1, codes, 0.0)
    rest = ez.unflatten(-1, (K // BLOCK, BLOCK)).sum(dim=-1)
    own = torch.exp(zp - m)                                                        # (B, h, w, n)
    own = own if once is None else (own * once).sum(dim=-1, keepdim=True)
    shift, top = mixture.proposal(zp, m + torch.log(rest.sum(dim=-1, keepdim=True) + own))
    # The largest log-probability (boosts are >= 0, so a proposal's is at least z_p − shift): every
    # weight below is exp(log-probability − M) <= 1, the largest exactly 1.
    M = torch.maximum(m - shift, top.amax(dim=-1, keepdim=True))
    p_weight = torch.exp(top - M)                                                  # (B, h, w, n)
    in_block = (codes // BLOCK)[..., None] == torch.arange(K // BLOCK, device=z.device)   # (B, h, w, n, K/BLOCK)
    added = torch.where(in_block, (p_weight if once is None else p_weight * once)[..., None], 0.0).sum(dim=-2)
    mass = torch.exp(m - shift - M) * rest + added

    blocks = z.unflatten(-1, (K // BLOCK, BLOCK))

    def weights(b):                                       # block b's codes: exp(log-probability − M)
        idx = b * BLOCK + torch.arange(BLOCK, device=z.device)                      # (B, h, w, BLOCK)
        w = torch.exp(_block(blocks, b) - shift - M)
        for j in range(codes.shape[-1]):
            w = torch.where(idx == codes[..., j, None], p_weight[..., j, None], w)
        return w

    drawn = _two_level(mass, weights, u)
    return drawn, (z - shift).scatter(-1, codes, top) if logits else None
