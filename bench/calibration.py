"""The calibration table: the evidence that each metric of docs/metrics.md separates good from bad.

    python -m ochre.bench.calibration TOKENS --run ochre=RUN [--run seed-v3=RUN] [--run blind=RUN] [--split test]

For every metric, its value on the real frames (the tokenizer's reconstruction of the truth: what a
perfect world model scores), on the repeat-the-frame predictor, on a still dream (the decoded
context, never moving), on uniform random codes, and on the world-model runs named (the shipped
model, the seed-v3 recipe, the action-blind recipe `ochre train --recipe blind`: actions dropped in
training and inference). Writes bench/results/calibration_<device>_<date>.json and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ochre.bench.common import data_record, header, result_path, run_record
from ochre.eval import EvalConfig
from ochre.eval.evaluate import calibrate
from ochre.io import write_json_atomic

ROWS = ("psnr@8", "psnr@32", "delta_psnr@16", "yaw_response", "code_usage@256", "grad_ratio@256",
        "idm/dream/acc_yaw", "idm/dream/acc_forward", "tour/turn_sign_acc", "tour/turn_gain", "tour/walk_sign_acc",
        "tour/strafe_sign_acc", "tour/revisit_psnr", "c2st@1-8", "c2st@9-32", "c2st@129-256")


def markdown(table: dict[str, dict]) -> str:
    names = list(table)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in ROWS:
        cells = []
        for n in names:
            v = table[n].get(row)
            cells.append("–" if not isinstance(v, (int, float)) or v != v else f"{v:.2f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token shards (`ochre tokenize` output) whose split is scored")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=RUN", help="a world-model run to score")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument("--long-rollouts", type=int, default=16)
    ap.add_argument("--tours", type=int, default=32)
    ap.add_argument("--out", default=None, help="result JSON (default bench/results/calibration_cpu_<date>.json)")
    args = ap.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    cfg = EvalConfig(split=args.split, rollouts=args.rollouts, long_rollouts=args.long_rollouts, seeds=(0,),
                     tours=args.tours, learned=False)
    table = calibrate(args.tokens, runs, cfg=cfg)
    out = Path(args.out) if args.out else result_path("calibration")
    write_json_atomic(out, {**header("cpu"), "tokens": data_record(args.tokens), "split": args.split,
                            "runs": {name: run_record(run) for name, run in runs.items()},
                            "settings": {"rollouts": args.rollouts, "long_rollouts": args.long_rollouts,
                                         "tours": args.tours, "seeds": [0]},
                            "rows": list(ROWS), "table": table})
    print(markdown(table))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
