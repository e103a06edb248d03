"""Live-step latency of the native deploy: `ochre bench`'s torch and native rows, plus the same
AOTInductor packages run by `ochre-native` (C++, no Python), timed by the binary itself.

    python -m ochre.bench.native [--checkpoint RUN] [--batch 1 8] [--binary build/ochre-native]

Rows (docs/runtime.md#bench-rows): `torch` (eager), `native` (the packages through the Python backend,
ochre.runtime.native), `native-cpp` (the binary's step+decode p50/p99 over the same number of
steps, when --binary is given). The packages are the ones `ochre bench` compiles into the cache.
Writes bench/results/native_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from ochre.bench.common import result_path


def cpp_row(binary: str, packages: Path, batch: int, runs: int, warmup: int, threads: int) -> dict:
    out = subprocess.run([binary, "--packages", str(packages), "--steps", str(runs + warmup), "--warmup",
                          str(warmup), "--threads", str(threads)], capture_output=True, text=True, check=True).stdout
    m = re.search(r"p50 ([0-9.]+) ms, p99 ([0-9.]+) ms", out)
    if m is None:
        raise RuntimeError(f"{binary} printed no latency line: {out!r}")
    p50, p99 = float(m.group(1)), float(m.group(2))
    return {"backend": "native-cpp", "batch": batch, "fps": 1e3 / p50, "step_ms_p50": p50, "step_ms_p99": p99,
            "frames_per_s": 1e3 * batch / p50, "runs": runs, "device": "cpu"}


def main(argv=None) -> int:
    from ochre.io import write_json_atomic
    from ochre.models.lookup import resolve
    from ochre.runtime.bench import add_speedups, run_bench, table
    from ochre.runtime.exports import ensure_aoti

    p = argparse.ArgumentParser(prog="python -m ochre.bench.native", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="world-model run (default: newest demo, else the shipped model)")
    p.add_argument("--tokenizer", default=None, help="its tokenizer run (default: the one its data names)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=200, help="timed steps per row")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the physical cores)")
    p.add_argument("--binary", default=None, help="ochre-native to time as well (e.g. build/ochre-native)")
    p.add_argument("--out", default=None, help="result file (default bench/results/native_<device>_<date>.json)")
    args = p.parse_args(argv)
    model = resolve(args.checkpoint, args.tokenizer)
    result = run_bench(model, backends=["torch", "native"], batches=args.batch, runs=args.runs,
                       threads=args.threads, log=lambda m: print(m, file=sys.stderr))
    if args.binary:
        for b in args.batch:
            result["rows"].append(cpp_row(args.binary, ensure_aoti(model, b), b, args.runs, result["warmup"],
                                          result["threads"]))
        add_speedups(result["rows"])
    out = Path(args.out) if args.out else result_path("native")
    write_json_atomic(out, result)
    print(table(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
