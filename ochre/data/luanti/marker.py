"""Which game step a grabbed window shows: the frame number the client-side mod draws above the picture.

Window layout (M = GameConfig.strip rows): rows [0, M) hold `bits` cells side by side, cell i white
when bit i of the step number is set (mods/ochre_pose/init.lua draws them); rows [M, M + H) are the
recorded picture; rows [M + H, H + 2M) mirror the top strip so the view's centre is the picture's.
Legend: H W picture size, M strip rows.
"""

from __future__ import annotations

import numpy as np


def frame_number(window: np.ndarray, strip: int, bits: int) -> int:
    """The step number (modulo 2**bits) drawn in a grabbed window, uint8 (H + 2M, W, 3)."""
    width = window.shape[1]
    row = window[strip // 2].astype(np.int32).sum(axis=-1)                       # (W,)
    centres = ((np.arange(bits) + 0.5) * width / bits).astype(np.int64)
    lit = row[centres] > 3 * 128
    return int(np.sum(lit.astype(np.int64) << np.arange(bits)))


def picture(window: np.ndarray, strip: int) -> np.ndarray:
    """The recorded picture of a grabbed window: rows [M, M + H) -> uint8 (H, W, 3)."""
    return window[strip:window.shape[0] - strip]


def steps_ahead(shown: int, wanted: int, bits: int) -> int:
    """How many steps the shown number is past the wanted step, modulo 2**bits, in [-2**(bits-1), 2**(bits-1))."""
    half = 1 << (bits - 1)
    return (shown - wanted + half) % (1 << bits) - half
