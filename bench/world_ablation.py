"""World-model ablation on `val`: which of the motion priors and the memory the recipe keeps.

    python -m ochre.bench.world_ablation TOKENS --work DIR [--minutes 10] [--variants ...]

Every variant trains the same tiny model (`ochre train` settings, compiled) for the same wall time from
the same seed on the train split, and is scored on val (docs/metrics.md: choices are made on val)
with the same rollouts, tours, action model and realism test. Variants add one piece at a time:
    copy        turns and looks only: the state warp and the copy of shifted codes (the earlier model)
    moves       + the motion prior of strafing (a shift) and walking (a zoom)
    memory      + the panorama of codes seen from where the player stands (the ochre recipe)
    coords      + the screen position (row, column) as input planes of every layer (not kept: it did not
                make long dreams more realistic on val, bench/results/world_ablation_cpu_2026-12-04.json)
Writes bench/results/world_ablation_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ochre.bench.common import data_record, header, result_path
from ochre.io import write_json_atomic

VARIANTS = {"copy": dict(moves=False, memory=False, coords=False),
            "moves": dict(moves=True, memory=False, coords=False),
            "memory": dict(moves=True, memory=True, coords=False),
            "coords": dict(moves=True, memory=True, coords=True)}
KEEP = ("psnr@1", "psnr@8", "psnr@32", "delta_psnr@16", "yaw_response", "code_usage@256", "grad_ratio@256",
        "learned/psnr@8", "learned/yaw_response", "tour/turn_sign_acc", "tour/turn_gain", "tour/strafe_sign_acc",
        "tour/walk_sign_acc", "tour/revisit_psnr", "tour/walk/psnr@16", "tour/walk/repeat/psnr@16",
        "idm/ratio_yaw", "idm/ratio_pitch", "idm/ratio_forward", "idm/ratio_strafe", "c2st@9-32", "c2st@129-256",
        "repeat_frame/psnr@8", "repeat_frame/psnr@32")


def main(argv=None) -> int:
    from ochre.eval import EvalConfig, evaluate
    from ochre.train.world import recipe, train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token shards (`ochre tokenize` output)")
    ap.add_argument("--work", required=True, help="folder for the variants' runs and evals (resumed if present)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--long-rollouts", type=int, default=8,
                    help="256-step rollouts scored (default 8; c2st@129-256 needs more: 48 reads it to about ±0.03)")
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/world_ablation_cpu_<date>.json)")
    args = ap.parse_args(argv)
    cfg = EvalConfig(split="val", rollouts=64, long_rollouts=args.long_rollouts, seeds=(0,), tours=16)
    rows = []
    for name in args.variants:
        v = VARIANTS[name]
        model, tcfg, sampling = recipe("ochre", "tiny", minutes=args.minutes, steps=100_000)
        run = Path(args.work) / name
        summary = train(args.tokens, run, replace(model, memory=v["memory"], coords=v["coords"]), tcfg, sampling,
                        compile=True, resume=True, moves=v["moves"], progress=True)
        m = evaluate(run, args.tokens, Path(args.work) / f"{name}-eval", cfg=cfg)
        rows.append({"variant": name, **v, "steps": summary["step"], "metrics": {k: m.get(k) for k in KEEP},
                     "intervals": {k: m.get(f"{k}/ci") for k in KEEP if f"{k}/ci" in m}})
        print(f"{name}: " + ", ".join(f"{k} {m[k]:.3f}" for k in KEEP[:6] if isinstance(m.get(k), float)),
              file=sys.stderr)
    out = Path(args.out) if args.out else result_path("world_ablation")
    write_json_atomic(out, {**header("cpu"), "tokens": data_record(args.tokens), "split": "val",
                            "minutes": args.minutes,
                            "eval": {"rollouts": cfg.rollouts, "long_rollouts": cfg.long_rollouts, "seeds": cfg.seeds,
                                     "tours": cfg.tours}, "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
