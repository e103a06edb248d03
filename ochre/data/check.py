"""`ochre data check`: is every action aligned with the frames it produced?

For each pair of consecutive kept frames we measure the image shift by phase correlation,
then correlate yaw with the horizontal shift and pitch with the vertical shift at lags
-5..+5 (action t against the shift between frames t+lag and t+lag+1). A correctly aligned
dataset peaks at lag 0; loading frames left in, a linspace alignment or an off-by-one in the
action window moves the peak, and a model trained on it learns to ignore its inputs.
Signs: positive yaw turns right, so content moves left (dx < 0); positive pitch looks down,
so content moves up (dy < 0). We correlate the action with the negated shift.
Data in which yaw (or pitch) never changes has no correlation to peak anywhere: that is
reported as "cannot check" (exit code 3), never as a misalignment (exit code 1).
"""

from __future__ import annotations

import sys

import numpy as np

from ochre.data.loader import WindowDataset
from ochre.data.shards import load_npy
from ochre.data.video import decode_frames

CANNOT_CHECK = 3      # exit code: an action without variance, so alignment cannot be measured


def phase_shift(frames: np.ndarray) -> np.ndarray:
    """Sub-pixel content shift (dy, dx) from each frame to the next: (T, H, W, 3) -> (T-1, 2)."""
    gray = frames.astype(np.float32).mean(axis=-1)                          # (T, H, W)
    gray -= gray.mean(axis=(1, 2), keepdims=True)
    h, w = gray.shape[1:]
    gray *= np.outer(np.hanning(h), np.hanning(w))                          # no edge wrap artefacts
    f = np.fft.rfft2(gray)
    cross = f[1:] * np.conj(f[:-1])                                         # peak at +shift
    cross /= np.abs(cross) + 1e-6
    surface = np.fft.irfft2(cross, s=(h, w))                                # (T-1, H, W)
    flat = surface.reshape(len(surface), -1).argmax(axis=1)
    py, px = np.unravel_index(flat, (h, w))
    out = np.empty((len(surface), 2), np.float64)
    rows = np.arange(len(surface))
    for axis, (p, n) in enumerate(((py, h), (px, w))):
        # Parabolic refinement of the peak along each axis: whole pixels are too coarse for
        # the few-pixel shifts of one 8 fps step.
        def at(off, p=p, axis=axis, n=n):
            idx = (p + off) % n
            return surface[rows, idx, px] if axis == 0 else surface[rows, py, idx]
        c, l, r = at(0), at(-1), at(1)
        denom = l - 2 * c + r
        sub = np.where(np.abs(denom) > 1e-9, 0.5 * (l - r) / np.where(denom == 0, 1, denom), 0.0)
        out[:, axis] = ((p + sub + n / 2) % n) - n / 2                     # wrap to [-n/2, n/2)
    return out


def lag_correlations(actions: list[np.ndarray], shifts: list[np.ndarray], max_lag: int) -> np.ndarray:
    """Correlation at each lag in -max_lag..max_lag for yaw vs -dx and pitch vs -dy: (2, 2L+1).

    Pairs are formed inside each clip only, never across two clips.
    """
    lags = range(-max_lag, max_lag + 1)
    out = np.zeros((2, len(lags)))
    for row, (a_col, s_col) in enumerate(((0, 1), (1, 0))):
        for j, lag in enumerate(lags):
            xs, ys = [], []
            for a, s in zip(actions, shifts):
                n = len(a)
                lo, hi = max(0, -lag), min(n, n - lag)
                if hi > lo:
                    xs.append(a[lo:hi, a_col])
                    ys.append(-s[lo + lag:hi + lag, s_col])
            x, y = np.concatenate(xs), np.concatenate(ys)
            out[row, j] = np.corrcoef(x, y)[0, 1] if x.std() > 0 and y.std() > 0 else 0.0
    return out


def check(prepared, max_samples: int = 64, max_lag: int = 5) -> dict:
    actions, shifts = measure(prepared, max_samples)
    corr = lag_correlations(actions, shifts, max_lag)
    lags = list(range(-max_lag, max_lag + 1))
    peaks = [lags[int(np.argmax(c))] for c in corr]
    joined = np.concatenate(actions)
    still = [name for col, name in enumerate(("yaw", "pitch")) if not joined[:, col].std() > 0]
    return {"lags": lags, "yaw": corr[0].tolist(), "pitch": corr[1].tolist(),
            "yaw_peak_lag": peaks[0], "pitch_peak_lag": peaks[1],
            "clips": len(actions), "still": still, "ok": peaks == [0, 0] and not still,
            **content_shift(actions, shifts)}


def content_shift(actions: list[np.ndarray], shifts: list[np.ndarray]) -> dict:
    """Pixels the content moves per unit of yaw and of pitch (docs/data.md#actions units), from pairs that
    only turn (or only look) and do not walk: the median of −shift / action, robust to the
    frames phase correlation cannot read (sky, fog). None for an axis with fewer than 16 such pairs.

    The dynamics model's warp prior moves its state and codes by exactly this much, so it is
    read off the data, not assumed: it depends on the field of view and the crop (the synthetic
    world's 70° gives 12.2 px per 15° of yaw at 64 px; VPT's 16:9 centre crop about 22).
    """
    a, s = np.concatenate(actions), np.concatenate(shifts)
    still_keys = np.abs(a[:, 2:]).max(axis=1) == 0
    out = {}
    for name, col, s_col in (("yaw", 0, 1), ("pitch", 1, 0)):
        pure = still_keys & (np.abs(a[:, col]) > 0.1) & (np.abs(a[:, 1 - col]) < 0.05)
        ratios = -s[pure, s_col] / a[pure, col]
        out[f"{name}_px_per_unit"] = float(np.median(ratios)) if pure.sum() >= 16 else None
    return out


def measure(prepared, max_samples: int = 64, split: str = "all") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Actions and phase-correlation shifts of up to `max_samples` clips, in index order."""
    ds = WindowDataset(prepared, window=2, split=split, shuffle=False)
    actions, shifts = [], []
    for sample in ds.samples():
        if len(actions) >= max_samples:
            break
        frames = decode_frames(sample["mp4"])                               # (K, H, W, 3)
        actions.append(load_npy(sample["actions.npy"]))
        shifts.append(phase_shift(frames))
    if not actions:
        raise ValueError(f"{prepared}: no clips to check")
    return actions, shifts


def format_table(result: dict) -> str:
    lines = [f"{'lag':>5} {'yaw~-dx':>9} {'pitch~-dy':>10}"]
    for lag, y, p in zip(result["lags"], result["yaw"], result["pitch"]):
        mark = " <" if lag in (result["yaw_peak_lag"], result["pitch_peak_lag"]) else ""
        lines.append(f"{lag:>5} {y:>9.3f} {p:>10.3f}{mark}")
    return "\n".join(lines)


def run(args) -> int:
    try:
        result = check(args.prepared, args.max_samples, args.max_lag)
    except (FileNotFoundError, ValueError) as e:
        print(f"ochre data check: {e}", file=sys.stderr)
        return 2
    print(f"alignment check over {result['clips']} clips (correlation of action with image shift)")
    print(format_table(result))
    moves = [f"{name} {result[f'{name}_px_per_unit']:.1f} px" for name in ("yaw", "pitch")
             if result[f"{name}_px_per_unit"] is not None]
    if moves:
        print(f"content shift per unit action (what the world model's warp uses): {', '.join(moves)}")
    if result["still"]:
        print(f"cannot check: no {' or '.join(result['still'])} movement in the data (every such action is 0 in "
              f"{result['clips']} clips), so no lag can be told from another. Check data with camera turns, "
              "or raise --max-samples.", file=sys.stderr)
        return CANNOT_CHECK
    if result["ok"]:
        print("OK: yaw and pitch both peak at lag 0")
        return 0
    print(f"MISALIGNED: yaw peaks at lag {result['yaw_peak_lag']}, pitch at lag {result['pitch_peak_lag']} "
          "(expected 0). Check loading-frame skipping and the action window.", file=sys.stderr)
    return 1
