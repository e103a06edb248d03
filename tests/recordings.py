"""Small recordings made on the spot (nothing is downloaded): frames that spell their own
index, and random controls."""

from __future__ import annotations

import numpy as np

KEYS = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")
BITS = 12          # frame index encoded in 12 blocks: videos up to 4096 frames


def index_frames(n: int, size: int = 64) -> np.ndarray:
    """Frames whose pixels spell their own index: bit b of i is block b (16x16 px) black or
    white, robust to lossy coding and to resizing. (n, size, size, 3) uint8."""
    frames = np.zeros((n, size, size, 3), np.uint8)
    cell = size // 4
    for i in range(n):
        for b in range(BITS):
            if (i >> b) & 1:
                r, c = divmod(b, 4)
                frames[i, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = 255
    frames[:, 3 * cell:, :, 1] = 90     # a constant band so no frame is all black
    return frames


def read_index_frames(frames: np.ndarray) -> np.ndarray:
    """Inverse of index_frames for decoded frames (T, H, W, 3) -> (T,) int."""
    size = frames.shape[1]
    cell = size // 4
    out = np.zeros(len(frames), np.int64)
    for b in range(BITS):
        r, c = divmod(b, 4)
        block = frames[:, r * cell + 2:(r + 1) * cell - 2, c * cell + 2:(c + 1) * cell - 2, 0]
        out |= (block.mean(axis=(1, 2)) > 127).astype(np.int64) << b
    return out


def random_controls(n: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N, 2) camera degrees [pitch, yaw] as whole VPT mouse counts, and 0/1 keys."""
    rng = np.random.default_rng(seed)
    camera = rng.integers(-40, 41, size=(n, 2)) * 0.15
    keys = {k: (rng.random(n) < 0.3).astype(np.int64) for k in KEYS}
    return camera, keys
