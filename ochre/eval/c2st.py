"""Realism by a classifier two-sample test (docs/metrics.md#realism-c2sta-b).

A small CNN (ochre.eval.cnn) learns to tell frames of one set from frames of another. It trains on
the first half of each set's rollouts (by the leading axis) and is scored on the other half, so
frames of one rollout, which look alike, never sit on both sides of the split. The score is its
accuracy on balanced held-out classes: 0.5 when the sets cannot be told apart, 1.0 when every frame
gives itself away.
Legend: N M rollouts, T frames per rollout, B batch, H W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ochre.eval.cnn import conv_stack, to_input


@dataclass(frozen=True)
class C2STConfig:
    channels: tuple[int, ...] = (16, 32, 64, 64)
    steps: int = 200
    batch: int = 64               # half fake, half real
    lr: float = 2e-3

    def __post_init__(self):
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be positive, got {self.channels}")
        if min(self.steps, self.batch) < 2 or self.lr <= 0:
            raise ValueError(f"steps and batch must be >= 2 and lr positive; got {self}")


class Critic(nn.Module):
    """Frames uint8 (B, H, W, 3) -> logit (B,) that the frame is fake."""

    def __init__(self, cfg: C2STConfig, size: int):
        super().__init__()
        self.features = conv_stack(3, cfg.channels)
        side = size
        for _ in cfg.channels:
            side = (side + 1) // 2
        self.head = nn.Linear(cfg.channels[-1] * side * side, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(to_input(frames)).flatten(1))[:, 0]


def _halves(rollouts: np.ndarray, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) frames uint8 (n, H, W, 3) from the first and second half of the rollouts."""
    if rollouts.ndim != 5 or rollouts.shape[-1] != 3 or rollouts.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8 (rollouts, T, H, W, 3), got {rollouts.dtype} {rollouts.shape}")
    if len(rollouts) < 2:
        raise ValueError(f"{name} has {len(rollouts)} rollout(s); the two-sample test needs 2 or more")
    half = len(rollouts) // 2
    flat = [torch.from_numpy(np.ascontiguousarray(r.reshape(-1, *r.shape[2:]))) for r in (rollouts[:half],
                                                                                         rollouts[half:])]
    return flat[0], flat[1]


def _train(fake: torch.Tensor, real: torch.Tensor, cfg: C2STConfig, seed: int) -> Critic:
    """A critic fit on balanced batches: cfg.batch / 2 frames drawn from each side per step."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):          # the same weights for a seed; global RNG untouched
        torch.manual_seed(seed)
        critic = Critic(cfg, fake.shape[1])
    opt = torch.optim.AdamW(critic.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    half = cfg.batch // 2
    target = torch.cat([torch.ones(half), torch.zeros(half)])                      # (B,) 1: fake
    critic.train()
    for _ in range(cfg.steps):
        batch = torch.cat([fake[torch.randint(len(fake), (half,), generator=gen)],
                           real[torch.randint(len(real), (half,), generator=gen)]])   # (B, H, W, 3)
        loss = F.binary_cross_entropy_with_logits(critic(batch), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return critic.eval()


@torch.no_grad()
def _says_fake(critic: Critic, frames: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([critic(frames[i:i + batch]) > 0 for i in range(0, len(frames), batch)])


def c2st(fake: np.ndarray, real: np.ndarray, seed: int = 0, cfg: C2STConfig | None = None) -> float:
    """Held-out accuracy of a critic telling fake uint8 (N, T, H, W, 3) from real (M, T2, H, W, 3)
    frames, with as many test frames of each class (the larger side subsampled). Deterministic for
    a seed."""
    return c2st_interval(fake, real, seed, cfg)[0]


def c2st_interval(fake: np.ndarray, real: np.ndarray, seed: int = 0,
                  cfg: C2STConfig | None = None) -> tuple[float, list[float]]:
    """c2st and its 95 % bootstrap interval over the held-out rollouts: the scored rollouts of each
    side are resampled with replacement (each side on its own) and the accuracy recomputed over the
    frames they hold. The critic is not retrained, so the interval is how far the score would move
    with other held-out play, not with another critic. -> (value, [lo, hi])."""
    from ochre.eval.intervals import stratified_interval

    cfg = cfg or C2STConfig()
    (fake_train, fake_test), (real_train, real_test) = _halves(fake, "fake"), _halves(real, "real")
    if fake_train.shape[1:] != real_train.shape[1:]:
        raise ValueError(f"fake frames are {tuple(fake_train.shape[1:])}, real ones {tuple(real_train.shape[1:])}")
    critic = _train(fake_train, real_train, cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    n = min(len(fake_test), len(real_test))
    fake_pick = torch.randperm(len(fake_test), generator=gen)[:n]
    real_pick = torch.randperm(len(real_test), generator=gen)[:n]
    right = (_says_fake(critic, fake_test[fake_pick]).numpy(), ~_says_fake(critic, real_test[real_pick]).numpy())
    # Which held-out rollout each scored frame came from (frames are flattened rollout by rollout).
    owner = (fake_pick.numpy() // fake.shape[1], real_pick.numpy() // real.shape[1])
    sides = [(np.bincount(o, weights=r, minlength=k), np.bincount(o, minlength=k))       # (rollouts,) each
             for o, r, k in zip(owner, right, (len(fake) - len(fake) // 2, len(real) - len(real) // 2))]

    def accuracy(idx_fake: np.ndarray, idx_real: np.ndarray) -> float:
        (fr, fn), (rr, rn) = sides
        return (fr[idx_fake].sum() + rr[idx_real].sum()) / (fn[idx_fake].sum() + rn[idx_real].sum())

    return stratified_interval(accuracy, (len(sides[0][0]), len(sides[1][0])), seed=seed)
