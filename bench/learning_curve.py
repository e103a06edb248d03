"""Does training buy a world model dB over its own motion prior, and at what rate?

    python -m ochre.bench.learning_curve --point STEPS PRIOR_EVAL MODEL_EVAL [--point ...] [--out JSON]

Each point is one run: its optimizer steps, and two `ochre eval` folders of that run on one split with
one plan — the run's own decoding and the motion prior alone (`--copy-boost 60 --fill-boost 60
--walk-boost 1`). Per point, the gain of the network over its prior is taken per rollout at psnr@s
(bench/paired); then the gain's slope against log2(steps), a least-squares line through the points,
with a 95 % bootstrap interval that resamples the rollouts once for all points (the runs dream from the
same real contexts, so a context's difficulty cancels within a run and its draw is shared across them).
Only the first noise seed's dreams are on disk, so the interval covers the rollouts, not the seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ochre.bench.paired import STEPS, differences, load
from ochre.eval.intervals import BOOTSTRAPS, interval, mean_interval
from ochre.io import write_json_atomic


def gains(prior: dict[str, np.ndarray], model: dict[str, np.ndarray], steps=STEPS) -> np.ndarray:
    """Per rollout, the model's psnr@s minus the prior's: (len(steps), N) (bench/paired's differences)."""
    return differences(prior, model, steps)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """The least-squares slope of y on x (both (P,))."""
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc * xc).sum())


def curve(points: list[tuple[int, np.ndarray]], steps=STEPS, boots: int = BOOTSTRAPS, seed: int = 0) -> dict:
    """points: (optimizer steps, gains (len(steps), N)) per run, every run on the same N rollouts ->
    {"points": [{"steps", "gain": {psnr@s: [v, ci]}}], "slope_per_doubling": {psnr@s: [v, ci]}}."""
    if len(points) < 2 or len({n for n, _ in points}) < 2:
        raise ValueError("a slope needs at least two points with different step counts")
    n = {g.shape[1] for _, g in points}
    if len(n) != 1:
        raise ValueError(f"the points' evals rolled out different numbers of rollouts: {sorted(n)}")
    n = n.pop()
    x = np.log2([s for s, _ in points]).astype(np.float64)
    g = np.stack([gain for _, gain in points])                                          # (P, S, N)
    out = {"points": [{"steps": int(s), "gain": {f"psnr@{t}": mean_interval(gain[i]) for i, t in enumerate(steps)}}
                      for s, gain in points], "slope_per_doubling": {}}
    for i, t in enumerate(steps):
        out["slope_per_doubling"][f"psnr@{t}"] = interval(lambda idx, i=i: slope(x, g[:, i, idx].mean(axis=1)), n,
                                                          boots=boots, seed=seed)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.learning_curve", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--point", nargs=3, action="append", required=True, metavar=("STEPS", "PRIOR_EVAL", "MODEL_EVAL"),
                    help="one run: its optimizer steps, its eval with the prior alone, its eval as decoded")
    ap.add_argument("--boots", type=int, default=2000, help="bootstrap draws of the slope's interval (default 2000)")
    ap.add_argument("--out", type=Path, default=None, help="also write the result here (JSON)")
    args = ap.parse_args(argv)
    try:
        points = [(int(s), gains(load(p), load(m))) for s, p, m in args.point]
        result = curve(points, boots=args.boots)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for (s, _, m), point in zip(args.point, result["points"]):
        cells = "  ".join(f"{k} {v:+.3f} [{lo:+.3f}, {hi:+.3f}]" for k, (v, (lo, hi)) in point["gain"].items())
        print(f"{s:>6} steps  {Path(m).name}: over the prior  {cells}")
    for k, (v, (lo, hi)) in result["slope_per_doubling"].items():
        print(f"slope {k}: {v:+.3f} [{lo:+.3f}, {hi:+.3f}] dB per doubling of steps")
    if args.out:
        write_json_atomic(args.out, {"first_seed_only": True, "points_from": [list(p) for p in args.point], **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
