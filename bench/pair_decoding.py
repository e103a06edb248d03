"""A probe of a decoding whose neighbouring codes see each other: a pairwise term from the training grids.

    python -m ochre.bench.pair_decoding RUN TOKENS --out DIR --beta B [--pmi] [--rounds R] [--split val]

After each step's draw (the run's shipped decoding), R rounds of checkerboard Gibbs resampling: each
position is drawn again, half the grid at a time, from the step's log-probabilities plus a pairwise
term with its four drawn neighbours, learned from the train split's token grids (bench/code_pairs):
minus B for every adjacent pair never seen in training, or with --pmi plus B times the pair's pointwise
mutual information log p(a, b) / (p(a) p(b)) (clipped to [-5, 5]). Then the §6 metrics of `ochre eval`
(100 rollouts x 2 seeds, 48 of 256 steps; no tours, learned twin or action model) in DIR/metrics.json.
Eval only: the live step does not do this. bench/results/pair_decoding_probe_cpu_2026-12-05.json.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from ochre.bench.code_pairs import pair_counts, train_grids
from ochre.eval.dreamers import ModelDreamer
from ochre.models.step import live_step


def pair_scores(counts: tuple[np.ndarray, np.ndarray, np.ndarray], k: int, pmi: bool) -> tuple[torch.Tensor, ...]:
    """(horizontal, vertical) (k, k) scores S[a, b] of a pair (left a, right b) / (top a, bottom b): minus one if
    never seen, else 0; or with `pmi` its pointwise mutual information, clipped to [-5, 5]."""
    ch, cv, cu = counts
    if not pmi:
        return tuple(-torch.from_numpy(c == 0).float().view(k, k) for c in (ch, cv))
    p = (cu + 1) / (cu + 1).sum()
    return tuple(torch.from_numpy(np.clip(np.log((c + 0.1) / c.sum()).reshape(k, k) - np.log(p[:, None] * p[None, :]),
                                          -5, 5)).float() for c in (ch, cv))


def neighbour_scores(codes: torch.Tensor, scores: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """codes (B, h, w) -> (B, h, w, K): for every position and every code c, the sum of the pair scores
    c would make with the position's drawn neighbours (missing ones at the border score 0)."""
    sh, sv = scores
    B, h, w = codes.shape
    out = torch.zeros(B, h, w, sh.shape[0])
    out[:, :, 1:] += sh[codes[:, :, :-1]]            # left neighbour a: S[a, c]
    out[:, :, :-1] += sh.T[codes[:, :, 1:]]          # right neighbour b: S[c, b]
    out[:, 1:, :] += sv[codes[:, :-1, :]]            # top
    out[:, :-1, :] += sv.T[codes[:, 1:, :]]          # bottom
    return out


def refine(codes: torch.Tensor, log_probs: torch.Tensor, scores, beta: float, rounds: int,
           gen: torch.Generator) -> torch.Tensor:
    """Checkerboard Gibbs rounds: codes (B, h, w), log-probabilities (B, h, w, K) -> codes (B, h, w)."""
    h, w = codes.shape[-2:]
    board = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2
    for _ in range(rounds):
        for colour in (0, 1):
            z = log_probs + beta * neighbour_scores(codes, scores)
            gumbel = -torch.log(-torch.log(torch.rand(z.shape, generator=gen).clamp_min(1e-20)))
            codes = torch.where(board == colour, (z + gumbel).argmax(-1), codes)
    return codes


def pair_dreamer(scores, beta: float, rounds: int):
    """A ModelDreamer class whose every step's draw is refined by `refine` (CPU)."""

    class PairDreamer(ModelDreamer):
        def _batch(self, context, actions, seed, keep):
            self.gibbs = torch.Generator().manual_seed(1000 + seed)             # per rollout batch, like the noise
            return super()._batch(context, actions, seed, keep)

        def draw(self, tokens, actions, noise, state):
            tokens, lp, state = live_step(self.model, tokens, actions, noise, state, self.sampling, logits=True)
            return refine(tokens, lp.float(), scores, beta, rounds, self.gibbs), state

    return PairDreamer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="world-model run or checkpoint folder")
    ap.add_argument("tokens", help="its token shards (the pair statistics come from their train split)")
    ap.add_argument("--out", required=True, help="eval output folder")
    ap.add_argument("--beta", type=float, required=True, help="weight of the pairwise term")
    ap.add_argument("--pmi", action="store_true",
                    help="pointwise mutual information instead of the unseen-pair penalty")
    ap.add_argument("--rounds", type=int, default=1, help="checkerboard Gibbs rounds a step (default 1)")
    ap.add_argument("--split", default="val")
    args = ap.parse_args(argv)

    from ochre.data.shards import read_index
    from ochre.device import keep_large_blocks
    from ochre.eval import EvalConfig
    from ochre.eval.evaluate import evaluate

    keep_large_blocks()
    k = int(read_index(args.tokens)["codebook_size"])
    scores = pair_scores(pair_counts(train_grids(args.tokens), k), k, args.pmi)
    cfg = EvalConfig(split=args.split, rollouts=100, long_rollouts=48, seeds=(0, 1), learned=False, tours=0, idm=False)
    m = evaluate(args.run, args.tokens, args.out, cfg=cfg, device="cpu",
                 dreamer_class=pair_dreamer(scores, args.beta, args.rounds))
    for key in ("psnr@8/over_repeat", "psnr@32/over_repeat", "c2st@9-32", "c2st@129-256", "grad_ratio@256"):
        print(key, round(m[key], 3), [round(x, 3) for x in m.get(key + "/ci", [])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
