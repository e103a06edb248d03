"""Do a dream's neighbouring codes belong together? The share of adjacent code pairs never seen in training.

    python -m ochre.bench.code_pairs TOKENS --run ochre=RUN [--run other=RUN] [--split val] [--rollouts 100]

A table of every horizontally and vertically adjacent pair of codes in the train split's token grids;
then, for the real codes of the split's short rollouts (the tokenizer's codes of the true frames) and
for each world model's dream of them (its shipped decoding, the eval's noise seeds), the share of
adjacent pairs in a grid that the table never saw, by step, with 95 % bootstrap intervals over rollouts
at steps 1, 8, 16 and 32. Real grids of held-out play set the floor (their own novelty); a dream whose
neighbours are drawn without regard to each other climbs above it. It asks what a sharper decoder
showed (bench/results/tokenizer_decoder_cpu_2026-12-05.json): whether the codes themselves disagree.
Writes bench/results/code_pairs_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ochre.bench.common import data_record, header, result_path, run_record
from ochre.io import write_json_atomic

STEPS = (1, 8, 16, 32)


def pair_counts(grids, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How often each (left, right) and (top, bottom) code pair, and each code, occurs in `grids`, an
    iterable of (..., h, w) integer arrays -> int64 (k*k,) tables indexed by a*k + b, and (k,) counts."""
    ch, cv, cu = np.zeros(k * k, np.int64), np.zeros(k * k, np.int64), np.zeros(k, np.int64)
    for g in grids:
        g = np.asarray(g, np.int64)
        ch += np.bincount((g[..., :, :-1] * k + g[..., :, 1:]).ravel(), minlength=k * k)
        cv += np.bincount((g[..., :-1, :] * k + g[..., 1:, :]).ravel(), minlength=k * k)
        cu += np.bincount(g.ravel(), minlength=k)
    return ch, cv, cu


def pair_table(grids, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Which (left, right) and (top, bottom) code pairs occur in `grids` -> two bool (k*k,) tables."""
    ch, cv, _ = pair_counts(grids, k)
    return ch > 0, cv > 0


def unseen_share(codes: np.ndarray, table: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    """The share of a grid's adjacent pairs the table never saw: (..., h, w) codes -> (...)."""
    seen_h, seen_v = table
    c = np.asarray(codes, np.int64)
    h = ~seen_h[c[..., :, :-1] * k + c[..., :, 1:]]                    # (..., h, w-1)
    v = ~seen_v[c[..., :-1, :] * k + c[..., 1:, :]]                    # (..., h-1, w)
    return (h.sum(axis=(-2, -1)) + v.sum(axis=(-2, -1))) / (h.shape[-2] * h.shape[-1] + v.shape[-2] * v.shape[-1])


def _interval(x: np.ndarray, seed: int = 0, n: int = 2000) -> list[float]:
    """95 % bootstrap interval of the mean of x (one value per rollout)."""
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (n, len(x)))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def summary(shares: np.ndarray) -> dict:
    """(rollouts, steps+1) shares -> the mean by step and intervals at STEPS."""
    out = {"by_step": [round(float(v), 5) for v in shares.mean(axis=0)]}
    for t in STEPS:
        if t < shares.shape[1]:
            out[f"@{t}"] = round(float(shares[:, t].mean()), 5)
            out[f"@{t}/ci"] = [round(v, 5) for v in _interval(shares[:, t])]
    return out


def train_grids(tokens):
    """The token grids (T, h, w) of every clip of a token-shard folder's train split, with a progress bar."""
    from tqdm import tqdm

    from ochre.data.loader import WindowDataset
    from ochre.data.shards import load_npy

    samples = WindowDataset(tokens, window=2, split="train", shuffle=False).samples()
    for s in tqdm(samples, desc="train grids", unit="clip", file=sys.stderr):
        yield load_npy(s["tokens.npy"])


def short_rollouts(tokens, split: str, rollouts: int) -> tuple[np.ndarray, np.ndarray]:
    """The real frames (N, S+1, H, W, 3) and actions (N, S, 4) of a split's short rollouts: the ones `ochre eval`
    rolls out for `rollouts` (its plan, every 8 frames)."""
    from ochre.data.shards import indexed_folder, read_index
    from ochre.eval import rollouts as ro

    trajs = ro.trajectories(indexed_folder(tokens, "clips", read_index(tokens)), split)
    real, actions, _ = ro.real_frames(trajs, ro.make_plan(trajs, rollouts, 0, 8))
    return real, actions


def real_codes(codec, real: np.ndarray) -> np.ndarray:
    """The tokenizer's codes (N, S+1, h, w) of real rollout frames (N, S+1, H, W, 3)."""
    import torch

    with torch.no_grad():
        return np.stack([codec.encode(r).cpu().numpy() for r in real])


def dream_codes(dreamer, real: np.ndarray, actions: np.ndarray, seeds) -> list[np.ndarray]:
    """A dreamer's codes (N, S+1, h, w) from each rollout's first real frame, one array per seed (the eval's
    noise seeds: the codes `ochre eval` scores); only frame 0 is decoded."""
    return [dreamer.dream(real[:, 0], actions, real, seed=s, keep=slice(0, 1))[1] for s in seeds]


def dream_shares(dreamer, real: np.ndarray, actions: np.ndarray, seeds, table, k: int) -> np.ndarray:
    """The unseen-pair share (N, S+1) of a dreamer's codes (dream_codes), mean over the seeds."""
    return np.mean([unseen_share(c, table, k) for c in dream_codes(dreamer, real, actions, seeds)], axis=0)


def same_share(codes: np.ndarray) -> np.ndarray:
    """The share of a grid's adjacent pairs that are one code twice (flat regions): (..., h, w) -> (...)."""
    c = np.asarray(codes)
    h, v = c[..., :, :-1] == c[..., :, 1:], c[..., :-1, :] == c[..., 1:, :]
    return (h.sum(axis=(-2, -1)) + v.sum(axis=(-2, -1))) / (h.shape[-2] * h.shape[-1] + v.shape[-2] * v.shape[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token shards (`ochre tokenize` output): the table from their train split")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=RUN",
                    help="a world model whose dreams to score")
    ap.add_argument("--split", default="val", help="the split whose rollouts are scored (default val)")
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--learned", action="store_true",
                    help="also each run without its decoding boosts (copy and fill at 0: the eval's learned/ twin)")
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/code_pairs_cpu_<date>.json)")
    args = ap.parse_args(argv)


    from ochre.data.shards import indexed_folder, read_index
    from ochre.device import keep_large_blocks
    from ochre.eval.dreamers import Codec, ModelDreamer
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    keep_large_blocks()
    runs = dict(item.split("=", 1) for item in args.run)
    index = read_index(args.tokens)
    k = int(index["codebook_size"])
    table = pair_table(train_grids(args.tokens), k)
    codec = Codec(load_tokenizer(indexed_folder(args.tokens, "tokenizer_checkpoint", index)))
    real, actions = short_rollouts(args.tokens, args.split, args.rollouts)
    rows = {"real": summary(unseen_share(real_codes(codec, real), table, k))}
    for name, run in runs.items():
        model, sampling, _ = load_dynamics(run)
        decodings = {name: sampling}
        if args.learned:
            decodings[f"{name}/learned"] = replace(sampling, copy_boost=0.0, fill_boost=0.0)
        for row, decoding in decodings.items():
            rows[row] = summary(dream_shares(ModelDreamer(row, model, codec, decoding), real, actions, args.seeds,
                                             table, k))
    out = Path(args.out) if args.out else result_path("code_pairs")
    write_json_atomic(out, {**header("cpu"), "tokens": data_record(args.tokens), "split": args.split,
                            "runs": {name: run_record(run) for name, run in runs.items()},
                            "settings": {"rollouts": len(real), "seeds": args.seeds, "steps": real.shape[1] - 1},
                            "pairs_seen": {"horizontal": int(table[0].sum()), "vertical": int(table[1].sum()),
                                           "of": k * k},
                            "what": "share of adjacent code pairs of a grid never seen in the train split's grids",
                            "rows": rows})
    for name, r in rows.items():
        print(name, "  ".join(f"@{t} {r[f'@{t}']:.3f} [{r[f'@{t}/ci'][0]:.3f}, {r[f'@{t}/ci'][1]:.3f}]"
                              for t in STEPS if f"@{t}" in r))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
