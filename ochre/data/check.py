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
The verdict reads yaw and pitch together: players turn smoothly, so each correlation falls off
slowly on both sides of its peak, and in a few short clips with weak image shifts (fog, a wall, a
busy machine that changed a game's path) one action's neighbouring lag can top lag 0 by chance,
while an off-by-one in the frames or the action window moves both. So the data are misaligned when
the mean of the two curves peaks elsewhere, or when one action alone peaks elsewhere in at least
95 % of resamples of its pairs in blocks of consecutive actions (a moving-block bootstrap,
`peak_support`: a bug that moves one action only). One action's peak elsewhere short of that is
reported, as within noise.
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


BLOCK = 8             # consecutive action pairs resampled together (a smooth turn spans several)
RESAMPLES = 1000
SIGNIFICANT = 0.95    # share of resamples in which a peak must beat lag 0 to be a misalignment


def _block_sums(actions: list[np.ndarray], shifts: list[np.ndarray], max_lag: int) -> np.ndarray:
    """Sums [n, Σx, Σy, Σx², Σy², Σxy] of lag_correlations' pairs per block of BLOCK consecutive
    actions of a clip: (2, 2L+1, blocks, 6); a pair belongs to the block of its action."""
    starts = np.cumsum([0] + [-(-len(a) // BLOCK) for a in actions])
    out = np.zeros((2, 2 * max_lag + 1, starts[-1], 6))
    for row, (a_col, s_col) in enumerate(((0, 1), (1, 0))):
        for j, lag in enumerate(range(-max_lag, max_lag + 1)):
            for a, s, first in zip(actions, shifts, starts):
                lo, hi = max(0, -lag), min(len(a), len(a) - lag)
                if hi <= lo:
                    continue
                x, y = a[lo:hi, a_col], -s[lo + lag:hi + lag, s_col]
                terms = np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
                np.add.at(out[row, j], first + np.arange(lo, hi) // BLOCK, terms)
    return out


def _corr_of_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson correlation from [..., 6] sums (0 where either side has no variance)."""
    n, sx, sy, sxx, syy, sxy = np.moveaxis(sums, -1, 0)
    cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    ok = (vx > 1e-12 * n) & (vy > 1e-12 * n)
    return np.where(ok, cov / np.sqrt(np.where(ok, vx * vy, 1.0)), 0.0)


def peak_support(actions: list[np.ndarray], shifts: list[np.ndarray], max_lag: int, peaks: list[int],
                 resamples: int = RESAMPLES, seed: int = 0) -> list[float]:
    """For yaw and pitch: the share of block-bootstrap resamples of the pairs in which the correlation at
    the peak lag (peaks, one per axis) is above lag 0's; 0.0 for a peak at lag 0. A resample draws as many
    blocks as there are, with replacement."""
    sums = _block_sums(actions, shifts, max_lag)                                   # (2, lags, blocks, 6)
    blocks = sums.shape[2]
    counts = np.random.default_rng(seed).multinomial(blocks, np.full(blocks, 1 / blocks), size=resamples)
    out = []
    for row, peak in enumerate(peaks):
        if peak == 0:
            out.append(0.0)
            continue
        at = _corr_of_sums(np.einsum("rb,lbk->rlk", counts, sums[row][[peak + max_lag, max_lag]]))  # (R, 2)
        out.append(float((at[:, 0] > at[:, 1]).mean()))
    return out


def check(prepared, max_samples: int = 64, max_lag: int = 5) -> dict:
    """`alignment` of up to max_samples clips of a prepared folder, with content_shift's pixels per unit."""
    actions, shifts = measure(prepared, max_samples)
    return {**alignment(actions, shifts, max_lag), **content_shift(actions, shifts)}


def alignment(actions: list[np.ndarray], shifts: list[np.ndarray], max_lag: int = 5) -> dict:
    """Per-clip actions (T, 4) and shifts (T, 2) -> {"lags", "yaw", "pitch" (correlation per lag), "both"
    (their mean), "peak_lag" (both's peak), "yaw_peak_lag", "pitch_peak_lag", "yaw_support", "pitch_support"
    (peak_support), "misaligned" (what peaks elsewhere: "both", or an action that does so in at least
    SIGNIFICANT of the resamples), "still" (actions that never move), "clips", "ok"}."""
    corr = lag_correlations(actions, shifts, max_lag)
    lags = list(range(-max_lag, max_lag + 1))
    peaks = [lags[int(np.argmax(c))] for c in corr]
    both = corr.mean(axis=0)
    peak = lags[int(np.argmax(both))]
    joined = np.concatenate(actions)
    still = [name for col, name in enumerate(("yaw", "pitch")) if not joined[:, col].std() > 0]
    support = peak_support(actions, shifts, max_lag, peaks)
    misaligned = [] if still else (["both"] if peak != 0 else []) + \
        [name for name, p in zip(("yaw", "pitch"), support) if p >= SIGNIFICANT]
    return {"lags": lags, "yaw": corr[0].tolist(), "pitch": corr[1].tolist(), "both": both.tolist(),
            "peak_lag": peak, "yaw_peak_lag": peaks[0], "pitch_peak_lag": peaks[1],
            "yaw_support": support[0], "pitch_support": support[1], "misaligned": misaligned,
            "clips": len(actions), "still": still, "ok": not misaligned and not still}


ZOOMS = np.round(np.arange(0.90, 1.1001, 0.01), 2)    # candidate zoom factors between two frames


def zoom_factors(frames: np.ndarray, zooms: np.ndarray = ZOOMS, margin: int = 8) -> np.ndarray:
    """Zoom between consecutive frames: (T, H, W, 3) -> (T-1,), the z of `zooms` that best maps frame
    t, shifted by its phase-correlation shift and scaled by z about the image centre, onto frame t+1
    (PSNR over the centre, `margin` pixels in from each edge). z > 1: the view grew (walking forward)."""
    gray = frames.astype(np.float32).mean(axis=-1)                           # (T, H, W)
    shifts = phase_shift(frames)                                             # (T-1, 2) [dy, dx]
    h, w = gray.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    out = np.empty(len(shifts))
    for t, (dy, dx) in enumerate(shifts):
        best, best_err = 1.0, np.inf
        for z in zooms:                  # frame t+1 at p shows frame t at centre + (p − centre) / z − shift
            warped = _bilinear(gray[t], cy + (ys - cy) / z - dy, cx + (xs - cx) / z - dx)
            err = np.square(warped[inner] - gray[t + 1][inner]).mean()
            if err < best_err:
                best, best_err = float(z), err
        out[t] = best
    return out


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """img sampled at float positions (edge pixels repeated beyond the border)."""
    h, w = img.shape
    y, x = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
    y0, x0 = np.minimum(y.astype(np.int64), h - 2), np.minimum(x.astype(np.int64), w - 2)
    fy, fx = y - y0, x - x0
    top = img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx
    bottom = img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


MIN_PAIRS = 16        # pairs that move one way alone, for a median that one odd frame cannot move


def content_shift(actions: list[np.ndarray], shifts: list[np.ndarray],
                  zooms: list[np.ndarray] | None = None) -> dict:
    """How far the picture moves per unit of each action (docs/data.md#actions units), from pairs
    that move one way alone: the median of −shift / action for yaw, pitch and strafe (pixels), and
    of log(zoom) / move_z for walking (zooms: zoom_factors of the same clips). The median is robust
    to the frames phase correlation cannot read (sky, fog). None for a motion with fewer than
    MIN_PAIRS such pairs.

    The world model's motion prior moves its state and codes by exactly this much, so it is read off
    the data, not assumed: it depends on the field of view, the crop and the walking speed (the
    synthetic world's 70° gives 12.2 px per 15° of yaw at 64 px; VPT's 16:9 centre crop about 22)."""
    a, s = np.concatenate(actions), np.concatenate(shifts)
    camera_still = (np.abs(a[:, 0]) < 0.05) & (np.abs(a[:, 1]) < 0.05)
    keys_still = np.abs(a[:, 2:]).max(axis=1) == 0
    out = {}
    for name, col, s_col in (("yaw", 0, 1), ("pitch", 1, 0)):
        pure = keys_still & (np.abs(a[:, col]) > 0.1) & (np.abs(a[:, 1 - col]) < 0.05)
        out[f"{name}_px_per_unit"] = _median(-s[pure, s_col] / a[pure, col]) if pure.sum() >= MIN_PAIRS else None
    strafe = camera_still & (np.abs(a[:, 2]) > 0.5) & (np.abs(a[:, 3]) < 0.1)
    out["strafe_px_per_unit"] = _median(-s[strafe, 1] / a[strafe, 2]) if strafe.sum() >= MIN_PAIRS else None
    out["walk_zoom_per_unit"] = None
    if zooms is not None:
        z = np.concatenate(zooms)
        walk = camera_still & (np.abs(a[:, 3]) > 0.5) & (np.abs(a[:, 2]) < 0.1)
        out["walk_zoom_per_unit"] = _median(np.log(z[walk]) / a[walk, 3]) if walk.sum() >= MIN_PAIRS else None
    return out


def _median(values: np.ndarray) -> float:
    return float(np.median(values))


def measure(prepared, max_samples: int = 64, split: str = "all", zoom: bool = False):
    """Actions, phase-correlation shifts (and with `zoom` the zoom factors) of up to `max_samples`
    clips, in index order -> (actions, shifts[, zooms]), lists of per-clip arrays."""
    ds = WindowDataset(prepared, window=2, split=split, shuffle=False)
    actions, shifts, zooms = [], [], []
    for sample in ds.samples():
        if len(actions) >= max_samples:
            break
        frames = decode_frames(sample["mp4"])                               # (K, H, W, 3)
        actions.append(load_npy(sample["actions.npy"]))
        shifts.append(phase_shift(frames))
        if zoom:
            zooms.append(zoom_factors(frames))
    if not actions:
        raise ValueError(f"{prepared}: no clips to check")
    return (actions, shifts, zooms) if zoom else (actions, shifts)


def format_table(result: dict) -> str:
    lines = [f"{'lag':>5} {'yaw~-dx':>9} {'pitch~-dy':>10} {'both':>7}"]
    for lag, y, p, b in zip(result["lags"], result["yaw"], result["pitch"], result["both"]):
        mark = " <" if lag in (result["yaw_peak_lag"], result["pitch_peak_lag"], result["peak_lag"]) else ""
        lines.append(f"{lag:>5} {y:>9.3f} {p:>10.3f} {b:>7.3f}{mark}")
    return "\n".join(lines)


def run(args) -> int:
    try:
        result = check(args.prepared, args.max_samples, args.max_lag)
    except (FileNotFoundError, ValueError) as e:
        print(f"ochre data check: {e}", file=sys.stderr)
        return 2
    print(f"alignment check over {result['clips']} clips (correlation of action with image shift)")
    print(format_table(result))
    moves = [f"{name} {result[f'{name}_px_per_unit']:.1f} px" for name in ("yaw", "pitch", "strafe")
             if result[f"{name}_px_per_unit"] is not None]
    if moves:
        print(f"picture shift per unit action (what the world model's motion prior uses): {', '.join(moves)}")
    if result["still"]:
        print(f"cannot check: no {' or '.join(result['still'])} movement in the data (every such action is 0 in "
              f"{result['clips']} clips), so no lag can be told from another. Check data with camera turns, "
              "or raise --max-samples.", file=sys.stderr)
        return CANNOT_CHECK
    alone = {name: f"{name} alone peaks at lag {result[f'{name}_peak_lag']} (above lag 0 in "
                   f"{result[f'{name}_support']:.0%} of {RESAMPLES} block resamples)"
             for name in ("yaw", "pitch") if result[f"{name}_peak_lag"] != 0}
    if result["ok"] and not alone:
        print("OK: yaw and pitch both peak at lag 0")
        return 0
    if result["ok"]:
        print(f"OK: yaw and pitch together peak at lag 0; {'; '.join(alone.values())}: within noise, short of the "
              f"{SIGNIFICANT:.0%} a misalignment of one action needs. More clips (--max-samples), or clips with more "
              "turning, tell the lags apart better.")
        return 0
    why = [f"yaw and pitch together peak at lag {result['peak_lag']}" if m == "both" else alone[m]
           for m in result["misaligned"]]
    print(f"MISALIGNED: {'; '.join(why)}, expected 0. Check loading-frame skipping and the action window.",
          file=sys.stderr)
    return 1
