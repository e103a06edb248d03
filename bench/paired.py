"""Two evals of the same rollouts, compared rollout by rollout: is a difference outside the draws' noise?

    python -m ochre.bench.paired EVAL_A EVAL_B [--out JSON]

`ochre eval` keeps its first noise seed's short dreams in rollouts.npz (real frames, dream frames, one
row per rollout). Two evals of one split with one plan (same --rollouts, --seeds and data) dream from
the same real contexts on the same actions, so B's PSNR minus A's can be taken per rollout and
resampled with the rollouts: the shared difficulty of a rollout cancels, and the interval is the
difference's own, far narrower than the two metrics' intervals side by side. Refused when the real
frames differ (not the same rollouts). Only the first seed's dreams are on disk, so the interval
covers the rollouts, not the noise seeds' mean the metrics report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ochre.eval.intervals import mean_interval
from ochre.eval.rollouts import psnr
from ochre.io import write_json_atomic

STEPS = (1, 4, 8, 16, 32)


def load(folder) -> dict[str, np.ndarray]:
    """An eval folder's rollouts.npz -> {"real", "dream", "keys", "starts"}; a clear error if absent."""
    path = Path(folder) / "rollouts.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no rollouts.npz (is {folder} the --out folder of `ochre eval`?)")
    with np.load(path) as z:
        return {k: z[k] for k in ("real", "dream", "keys", "starts")}


def differences(a: dict[str, np.ndarray], b: dict[str, np.ndarray], steps=STEPS) -> np.ndarray:
    """Per rollout, B's psnr@s minus A's: (len(steps), N); refused unless both rolled out the same real frames."""
    if not all(np.array_equal(a[k], b[k]) for k in ("keys", "starts", "real")):
        raise ValueError("the two evals did not roll out the same real frames: run both with the same split, "
                         "--rollouts, --seeds and tokens")
    horizon = a["real"].shape[1] - 1
    if max(steps) > horizon:
        raise ValueError(f"psnr@{max(steps)}: the rollouts on disk are {horizon} steps long")
    return np.stack([psnr(b["dream"][:, s], b["real"][:, s]) - psnr(a["dream"][:, s], a["real"][:, s]) for s in steps])


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], steps=STEPS) -> dict[str, dict]:
    """psnr@s of each dream and B − A per rollout, with 95 % bootstrap intervals over rollouts:
    {f"psnr@{s}": {"a": [v, ci], "b": [v, ci], "b_minus_a": [v, ci]}}."""
    diff = differences(a, b, steps)
    out = {}
    for i, s in enumerate(steps):
        pa, pb = psnr(a["dream"][:, s], a["real"][:, s]), psnr(b["dream"][:, s], b["real"][:, s])   # (N,)
        out[f"psnr@{s}"] = {"a": mean_interval(pa), "b": mean_interval(pb), "b_minus_a": mean_interval(diff[i])}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.paired", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("a", help="the baseline's `ochre eval --out` folder")
    ap.add_argument("b", help="the candidate's, same split, rollouts and seeds")
    ap.add_argument("--out", type=Path, default=None, help="also write the comparison here (JSON)")
    args = ap.parse_args(argv)
    try:
        result = paired(load(args.a), load(args.b))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, r in result.items():
        (va, _), (vb, _), (d, (lo, hi)) = r["a"], r["b"], r["b_minus_a"]
        print(f"{name:9s} A {va:6.2f}  B {vb:6.2f}  B − A {d:+.3f} [{lo:+.3f}, {hi:+.3f}] dB")
    if args.out:
        write_json_atomic(args.out, {"a": Path(args.a).name, "b": Path(args.b).name, "first_seed_only": True,
                                     "metrics": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
