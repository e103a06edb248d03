"""A decoder taught to paint the world model's own codes: the bank of dreamed code grids it trains on.

    python -m ochre.bench.dream_decoder bank WORLD TOKENS --out BANK.npz [--steps 128] [--split train]
    ochre train-tokenizer CLIPS --out DIR --decoder-of TOK --adversarial W --dream-codes BANK.npz

A tokenizer's decoder only ever saw the codes its encoder gives real frames. A dream's codes are not
such codes: by 32 steps one adjacent pair in five is one the train split never shows
(bench/code_pairs), and a decoder refined to render codes more faithfully made the dreams easier to
tell from real play (bench/results/tokenizer_decoder_cpu_2026-12-05.json). `bank` rolls the world
model out from train-split frames on their recorded actions (the live step and its decoding, as
`ochre eval` dreams) and keeps every dreamed grid; `--dream-codes` then has the discriminator judge
the decoder's pictures of those grids against real frames, while the reconstruction loss keeps it
faithful to real codes. Only train-split trajectories are dreamed, so val and test stay unseen.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def bank(world, tokens, steps: int = 128, split: str = "train", per_trajectory: int = 1, seed: int = 0,
         batch: int = 64) -> dict:
    """Dreamed code grids of a split's trajectories -> {"codes": (N, h, w) uint16, "step": (N,) int16 (1..steps)}."""
    import torch
    from tqdm import tqdm

    from ochre.data.shards import indexed_folder, read_index
    from ochre.eval import rollouts as ro
    from ochre.eval.dreamers import Codec, ModelDreamer
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    index = read_index(tokens)
    trajs = [t for t in ro.trajectories(indexed_folder(tokens, "clips", index), split) if len(t.frames) > steps]
    if not trajs:
        raise ValueError(f"{tokens}: no {split} trajectory has the {steps + 1} frames a rollout needs")
    rng = np.random.default_rng(seed)
    starts = [(i, int(s)) for i, t in enumerate(trajs)
              for s in rng.integers(0, len(t.frames) - steps, per_trajectory)]
    model, sampling, _ = load_dynamics(world)
    dreamer = ModelDreamer("bank", model, Codec(load_tokenizer(indexed_folder(tokens, "tokenizer_checkpoint", index))),
                           sampling, batch=batch)
    codes = []
    with torch.inference_mode():
        for j in tqdm(range(0, len(starts), batch), desc="dreaming", unit="batch", file=sys.stderr):
            part = starts[j:j + batch]
            context = np.stack([trajs[i].frames[s] for i, s in part])
            actions = np.stack([trajs[i].actions[s:s + steps] for i, s in part])
            codes.append(dreamer.dream(context, actions, seed=seed + j, keep=slice(0, 1))[1][:, 1:])  # (b, S, h, w)
    codes = np.concatenate(codes)                                                    # (R, S, h, w)
    step = np.broadcast_to(np.arange(1, steps + 1, dtype=np.int16), codes.shape[:2])
    return {"codes": codes.reshape(-1, *codes.shape[2:]).astype(np.uint16), "step": step.reshape(-1).copy(),
            "codebook_size": np.int64(index["codebook_size"])}


def save_bank(out, arrays: dict) -> None:
    """np.savez, atomically (a killed write leaves no half bank)."""
    from ochre.io import atomic_path

    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bank", help="dream the world model's code grids from a split's trajectories")
    b.add_argument("world", help="world-model run or checkpoint folder")
    b.add_argument("tokens", help="its token shards (`ochre tokenize` output)")
    b.add_argument("--out", required=True, help="the bank, .npz (codes, step, codebook_size)")
    b.add_argument("--steps", type=int, default=128, help="steps per rollout, every one kept (default 128)")
    b.add_argument("--split", default="train", help="whose trajectories (default train: val and test stay unseen)")
    b.add_argument("--per-trajectory", type=int, default=1, help="rollouts from each trajectory (default 1)")
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    arrays = bank(args.world, args.tokens, args.steps, args.split, args.per_trajectory, args.seed)
    save_bank(args.out, arrays)
    print(f"wrote {args.out}: {len(arrays['codes'])} grids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
