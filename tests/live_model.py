"""A playable model made on the spot for the export and runtime tests: the `tiny` tokenizer and
world model with random weights, laid out as `ochre demo` lays out its output (tokenizer/, tokens/
index naming the tokenizer by hash and relative path, world/ whose run records that hash and the
token shards), plus context frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ochre.io import record_path
from ochre.models.checkpoint import checkpoint_hash
from ochre.models.dynamics import Dynamics, DynamicsConfig
from ochre.models.sampling import SamplingConfig
from ochre.models.tokenizer import Tokenizer, TokenizerConfig
from ochre.train.checkpoint import save_checkpoint


def make_model(root: Path, seed: int = 0, codebook_size: int = 2048, pointer: int = 0) -> Path:
    """Write root/{tokenizer,tokens,world,eval}; returns root/world (a world-model run folder)."""
    torch.manual_seed(seed)
    tokenizer = Tokenizer(TokenizerConfig.preset("tiny", codebook_size=codebook_size))
    # The ochre recipe's model: every motion prior on, with the panorama memory.
    dynamics = Dynamics(DynamicsConfig.preset("tiny", codebook_size=codebook_size, memory=True, strafe_per_unit=0.4,
                                              zoom_per_unit=0.05, pointer=pointer))
    if pointer:                                     # a pointer that chooses, not its start (the prior)
        torch.nn.init.normal_(dynamics.pointer.weight, std=0.5)
    tok_ckpt = save_checkpoint(root / "tokenizer", 1, tokenizer)
    tok_hash = checkpoint_hash(tok_ckpt)
    (root / "tokens").mkdir(parents=True, exist_ok=True)
    (root / "tokens" / "index.json").write_text(json.dumps({
        "kind": "tokens", "fps": 8.0, "tokenizer": tok_hash, "codebook_size": codebook_size, "shards": [],
        "tokenizer_checkpoint": record_path(tok_ckpt, root / "tokens")}))
    save_checkpoint(root / "world", 1, dynamics, extra={
        "run": {"inputs": {"tokenizer": tok_hash}}, "tokens_dir": record_path(root / "tokens", root / "world"),
        "sampling": vars(SamplingConfig()), "recipe": "ochre"})
    # Context frames: smooth colour ramps with a few edges (a random-weight tokenizer takes anything).
    y, x = np.mgrid[0:64, 0:64]
    frames = np.stack([np.stack([(x * 4 + 30 * i) % 256, (y * 4) % 256, ((x // 8 + y // 8) % 2) * 200 + 20 * i], -1)
                       for i in range(6)])                                           # (N, 64, 64, 3)
    real = np.repeat(frames[:, None].astype(np.uint8), 9, axis=1)                    # (N, 9, 64, 64, 3)
    (root / "eval").mkdir(exist_ok=True)
    np.savez(root / "eval" / "rollouts.npz", real=real)
    return root / "world"


def check_player_reset(make_stepper, context: np.ndarray, actions: np.ndarray, player: int = 1) -> None:
    """Two steppers made alike by make_stepper() take the same actions; one restarts `player` from
    another frame midway. The other players' frames stay bit for bit those of the stepper that did
    not restart (their tokens, state and noise are untouched), and the restarted player sees the
    decoded new context, as a whole-batch reset would show it (frames within one level: the
    decoders may round x·255 at .5 the other way at another batch)."""
    a, b = make_stepper(), make_stepper()
    batch = a.batch
    others = [i for i in range(batch) if i != player]
    new = context[::-1][0]                                                     # (H, W, 3)
    np.testing.assert_array_equal(a.reset(context), b.reset(context))
    for t, act in enumerate(actions):
        if t == len(actions) // 2:
            before = a.frames.copy()
            after = a.reset_player(player, new)
            np.testing.assert_array_equal(after[others], before[others])
            whole = make_stepper().reset(np.concatenate([context[:player], new[None], context[player + 1:]]))
            assert np.abs(after[player].astype(int) - whole[player].astype(int)).max() <= 1
            assert not np.array_equal(after[player], before[player])
        fa, fb = a.step(act).copy(), b.step(act).copy()
        np.testing.assert_array_equal(fa[others], fb[others])
    assert not np.array_equal(fa[player], fb[player])
