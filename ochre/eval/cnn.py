"""The small CNN the learned instruments share (the inverse-dynamics model, the two-sample test).

Stride-2 3x3 convolutions, ReLU, channels-last: of the stacks tried on a 2-core CPU this layout
trained fastest per pair (the numbers: bench/results/instruments_cpu_2026-12-02.json).
Legend: B images, C channels, H W pixels.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_stack(c_in: int, channels: tuple[int, ...]) -> nn.Sequential:
    """len(channels) stride-2 convolutions: (B, c_in, H, W) -> (B, channels[-1], H >> n, W >> n)."""
    layers = []
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.ReLU()]
        c_in = c
    return nn.Sequential(*layers).to(memory_format=torch.channels_last)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, K, H, W, 3) or (B, H, W, 3) -> float (B, 3K, H, W) in [-1, 1], channels-last."""
    if images.dim() == 4:
        images = images[:, None]
    b, k, h, w, _ = images.shape
    # (B, H, W, 3K) in memory is channels-last (B, 3K, H, W) already: one copy, made while converting.
    x = images.permute(0, 2, 3, 1, 4).reshape(b, h, w, 3 * k).permute(0, 3, 1, 2)
    return x.float().mul_(1 / 127.5).sub_(1.0)
