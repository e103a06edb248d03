"""`python -m ochre.bench --device cuda`: every GPU check and timing of the project in one session
that survives its time slot.

GPU time comes in slots of about 15 minutes, starts included, so this is the one prepared command.
It prints its plan first (bench/plan.py: step, what, estimated seconds on an H100, time limit; the
total fits an 8-minute budget with margin), then runs it:
  1. the kernel tests on the device (compiled Triton against the pure-torch references),
  2. kernel timings (nearest-code search, fused FiLM-ConvGRU step),
  3. live-play latency per runtime backend at batch 1 and 64 (torch, compiled with CUDA graphs,
     onnxruntime on CUDA),
  4. world-model train-step throughput, tiny and base (eager, compiled, compiled + Triton),
  5. the native backend's AOTInductor CUDA packages at batch 1, beside torch.
Each stage writes bench/results/<stage>_<gpu>_<date>.json row by row as it measures (<gpu>: the
device's full name, e.g. nvidia-h100-80gb-hbm3), so a step killed by its time limit keeps what it
measured; a step or backend that fails is an error row and the run goes on (bench/runner.py). A
summary goes to bench/results/gpu_<gpu>_<date>.json. Rerunning the command continues: steps done
today by the same code are skipped (--fresh redoes them); --only reruns a part.

    python -m ochre.bench --device cuda [--only kernel_tests|kernels|live|train|native|STEP ...] [--fresh]
    python -m ochre.bench --plan-only                  the plan, on any machine
    python -m ochre.bench --dry-run                    every step at toy sizes on this machine (CI runs it)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from ochre.bench.plan import BUDGET_S, OPTIONAL, PLAN, STAGES, select, table

    ap = argparse.ArgumentParser(prog="python -m ochre.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="steps: " + ", ".join(s.id for s in PLAN) + "; optional (with --only): "
                                 + ", ".join(s.id for s in OPTIONAL))
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda",
                    help="cuda: the GPU session; cpu only with --dry-run or --plan-only")
    ap.add_argument("--only", nargs="+", metavar="STAGE|STEP", default=None,
                    help=f"run these stages ({', '.join(STAGES)}) or steps only (default: the whole plan)")
    ap.add_argument("--plan-only", action="store_true", help="print the plan and exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="walk every step at toy sizes (compiles traced by dynamo only): checks the session's code "
                    "on any machine before a GPU's minutes are spent on it")
    ap.add_argument("--fresh", action="store_true", help="redo steps an earlier run of this code finished today")
    ap.add_argument("--budget", type=float, default=None,
                    help=f"seconds the session may spend (default {BUDGET_S} on a GPU; a dry run's is 30 min)")
    ap.add_argument("--checkpoint", default=None,
                    help="the model the live steps play (default: the one shipped in the package)")
    ap.add_argument("--exports", nargs="+", default=(), metavar="DIR",
                    help="export folders of that model (`ochre export`, ONNX or AOTInductor, one per batch) for the "
                    "live steps: ONNX exports made on any machine beforehand save a GPU session their minutes")
    ap.add_argument("--results", type=Path, default=None,
                    help="folder for the result files (default bench/results; a dry run's: a new temporary folder)")
    args = ap.parse_args(argv)
    try:
        steps = select(args.only)
    except ValueError as e:
        ap.error(str(e))
    budget = args.budget or (BUDGET_S if not args.dry_run else 1800.0)
    print(("dry run of " if args.dry_run else "") + f"the GPU session plan ({len(steps)} steps):")
    print(table(steps, BUDGET_S))
    if args.plan_only:
        return 0
    if args.device == "cpu" and not args.dry_run:
        ap.error("the session plan is for a GPU: --device cpu runs only with --dry-run (or --plan-only); "
                 "CPU timings come from the single benchmarks (python -m ochre.bench.kernels, ...)")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA GPU (--dry-run walks the plan without one)")
    from ochre.bench.common import RESULTS
    from ochre.bench.runner import run_plan

    results = args.results or (Path(tempfile.mkdtemp(prefix="ochre-dry-run-")) if args.dry_run else RESULTS)
    summary = run_plan(steps, args.device, results, dry=args.dry_run, fresh=args.fresh, budget_s=budget,
                       checkpoint=args.checkpoint, exports=args.exports)
    width = max(len(s) for s in summary["steps"])
    for sid, entry in summary["steps"].items():
        print(f"{sid:<{width}}  {entry['status']:<8} {entry['seconds'] or 0:>6.1f} s  {entry.get('error', '')}")
    print(f"session: {summary['seconds']:.0f} s of {budget:.0f}; results in {results}")
    return 0 if all(e["status"] == "done" for e in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
