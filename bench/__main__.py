"""`python -m ochre.bench --device cuda`: every GPU check of the project in one short run.

GPU time comes in slots of about 15 minutes, so this is the one prepared command:
  1. the kernel tests on the device (compiled Triton against the pure-torch references),
  2. kernel timings (nearest-code search, fused FiLM-ConvGRU step, tokenizer train step),
  3. world-model train-step throughput (eager, compiled, compiled + Triton),
  4. live-play latency per runtime backend, when the runtime's benchmark is installed.
Each stage writes its own bench/results/<theme>_<gpu>_<date>.json; a summary of the run goes to
bench/results/gpu_<gpu>_<date>.json. Stages that fail are reported and the rest still run. The
whole run stays under ~8 minutes on an H100 (per-stage time limits below).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, command, time limit in seconds)
STAGES = [
    ("kernel_tests", [sys.executable, "-m", "pytest", "-q", "-x", "tests/kernels", "-p", "no:cacheprovider"], 150),
    ("kernels", [sys.executable, "-m", "ochre.bench.kernels", "--device", "{device}"], 150),
    ("train", [sys.executable, "-m", "ochre.bench.train", "--device", "{device}"], 120),
    ("live", [sys.executable, "-m", "ochre", "bench", "--device", "{device}"], 90),
]


def _available(name: str) -> str | None:
    """None when a stage can run in this install, else why not."""
    if name == "kernel_tests" and not (ROOT / "tests" / "kernels").is_dir():
        return "the tests/ folder is not here (run from a source checkout)"
    if name == "live" and importlib.util.find_spec("ochre.runtime.bench") is None:
        return "this version has no live-play benchmark (ochre.runtime.bench)"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    ap.add_argument("--only", nargs="+", choices=[s[0] for s in STAGES], default=[s[0] for s in STAGES])
    args = ap.parse_args(argv)
    import torch

    from ochre.bench.common import header, result_path
    from ochre.io import write_json_atomic

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA GPU")
    summary = {"benchmark": "gpu-session" if args.device == "cuda" else "cpu-session", **header(args.device),
               "stages": {}}
    t_all = time.perf_counter()
    for name, cmd, limit in STAGES:
        if name not in args.only:
            continue
        reason = _available(name)
        if reason:
            summary["stages"][name] = {"skipped": reason}
            print(f"== {name}: skipped ({reason})", flush=True)
            continue
        cmd = [c.format(device=args.device) for c in cmd]
        print(f"== {name}: {' '.join(cmd[1:])} (limit {limit} s)", flush=True)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=ROOT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        summary["stages"][name] = {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1)}
    summary["seconds"] = round(time.perf_counter() - t_all, 1)
    out = result_path("gpu" if args.device == "cuda" else "session", args.device)
    write_json_atomic(out, summary)
    print(json.dumps(summary["stages"], indent=2))
    print(f"wrote {out}")
    return 0 if all(s.get("returncode", 0) == 0 for s in summary["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
