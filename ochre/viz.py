"""Pictures for people: the side-by-side dream video and the PSNR-against-step plot.

Legend: N rollouts, S steps, H W pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ochre.data.video import write_mp4

SCALE = 4                                    # 64 px frames shown at 256 px
BAR_COLOURS = np.array([[230, 80, 60], [80, 200, 90], [70, 130, 240], [240, 200, 60]], np.uint8)


def _action_strip(action: np.ndarray, width: int, height: int = 40) -> np.ndarray:
    """Four horizontal bars, one per action [yaw, pitch, move_x, move_z], centred at zero: (height, width, 3)."""
    strip = np.full((height, width, 3), 24, np.uint8)
    rows = height // 4
    mid = width // 2
    for i, (value, colour) in enumerate(zip(np.clip(action, -1, 1), BAR_COLOURS)):
        y0, y1 = i * rows + 2, (i + 1) * rows - 2
        end = int(round(mid + value * (mid - 4)))
        lo, hi = sorted((mid, end))
        strip[y0:y1, lo:hi + 1] = colour
        strip[y0:y1, mid] = 200                                    # the zero line
    return strip


def title_strip(text: str, width: int, height: int = 24) -> np.ndarray:
    """A dark strip with `text` written on it in white: (height, width, 3) uint8."""
    from PIL import Image, ImageDraw  # pillow comes with matplotlib

    image = Image.new("RGB", (width, height), (24, 24, 24))
    ImageDraw.Draw(image).text((6, (height - 11) // 2), text, fill=(240, 240, 240))
    return np.asarray(image)


def dream_frames(real: np.ndarray, dream: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """real, dream uint8 (N, S+1, H, W, 3), actions (N, S, 4) -> video frames (N·(S+1), 4H+40, 8W+4, 3):
    real on the left, dream on the right, the action that leads to the next frame drawn below."""
    out = []
    for r_seq, d_seq, a_seq in zip(real, dream, actions):
        for t in range(len(r_seq)):
            r = r_seq[t].repeat(SCALE, 0).repeat(SCALE, 1)
            d = d_seq[t].repeat(SCALE, 0).repeat(SCALE, 1)
            gap = np.full((r.shape[0], 4, 3), 255, np.uint8)
            top = np.concatenate([r, gap, d], axis=1)
            action = a_seq[t] if t < len(a_seq) else np.zeros(4, np.float32)
            out.append(np.concatenate([top, _action_strip(action, top.shape[1])], axis=0))
    return np.stack(out)


def dream_video(path, real: np.ndarray, dream: np.ndarray, actions: np.ndarray, fps: float = 8.0) -> None:
    """Write dream_frames(...) as an H.264 mp4 that ordinary players open (yuv420p)."""
    write_mp4(path, dream_frames(real, dream, actions), fps, crf=18, pix_fmt="yuv420p")


def psnr_plot(path, curves: dict[str, np.ndarray]) -> None:
    """PSNR (dB) against rollout step, one line per predictor -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ochre.io import atomic_path

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for name, curve in curves.items():
        steps = np.arange(1, len(curve))
        ax.plot(steps, curve[1:], label=name, linestyle="--" if name == "repeat_frame" else "-")
    ax.set_xlabel("step (frames after the context frame)")
    ax.set_ylabel("PSNR vs real frame (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
