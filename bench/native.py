"""Live-step latency of the native deploy against eager torch, on the same model and the same work
per step (noise draw, step with sampling inside, decode to uint8 frames).

    python -m ochre.bench.native [--ckpt RUN --tokenizer RUN] [--batch 1 8] [--binary build/ochre-native]

Rows (DESIGN §6 bench rows): `torch` (the export graphs run eagerly), `native` (the AOTInductor
packages through the Python backend), `native-cpp` (the same packages in `ochre-native`, timed by
the binary itself; when --binary is given). Without --ckpt a tiny-preset model with random
weights stands in: latency depends on the shapes, not the weights. Packages are compiled once
per batch into --packages (reused when present). Writes bench/results/native_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ochre.bench.common import header, result_path, stats_ms, time_calls


def _models(args, root: Path):
    if args.ckpt:
        return Path(args.ckpt), args.tokenizer
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ctest_fixture", Path(__file__).resolve().parents[1] / "native" / "ctest_fixture.py")
    fixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixture)
    if not (root / "world").is_dir():
        fixture.make_runs(root)
    return root / "world", root / "tokenizer"


def _eager_step(ckpt, tokenizer, batch: int):
    """One live step in eager torch, as a closure over preallocated state."""
    from ochre.export.aoti import find_tokenizer
    from ochre.export.graph import DecodeGraph, StepGraph
    from ochre.train.checkpoint import load_dynamics, load_tokenizer

    model, sampling, _ = load_dynamics(ckpt, impl="torch")
    step = StepGraph(model, sampling)
    decode = DecodeGraph(load_tokenizer(find_tokenizer(ckpt, tokenizer), impl="torch"))
    tokens, actions, _, *state = step.example_inputs(batch)
    gen = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def run():
        nonlocal tokens, state
        tokens, _, *state = step(tokens, actions, torch.rand(tokens.shape, generator=gen), *state)
        return decode(tokens)
    return run


def _row(backend: str, batch: int, p50: float, p99: float) -> dict:
    return {"backend": backend, "batch": batch, "fps": round(1000.0 * batch / p50, 1),
            "step_ms_p50": round(p50, 3), "step_ms_p99": round(p99, 3)}


def bench_batch(ckpt, tokenizer, batch: int, packages: Path, runs: int, binary: str | None) -> list[dict]:
    from ochre.export.aoti import export_aoti
    from ochre.runtime.native import NativeStepper

    if not (packages / "manifest.json").is_file():
        export_aoti(ckpt, packages, tokenizer=tokenizer, batch=batch, check_steps=4)
    rows = []
    s = stats_ms(time_calls(_eager_step(ckpt, tokenizer, batch), warmup=5, runs=runs))
    rows.append(_row("torch", batch, s["ms_p50"], s["ms_p99"]))
    stepper = NativeStepper(packages)
    stepper.reset(np.load(packages / "context.npy"))
    actions = np.zeros((batch, 4), np.float32)
    s = stats_ms(time_calls(lambda: stepper.step(actions), warmup=5, runs=runs))
    rows.append(_row("native", batch, s["ms_p50"], s["ms_p99"]))
    if binary:
        out = subprocess.run([binary, "--packages", str(packages), "--steps", str(runs + 5), "--warmup", "5"],
                             capture_output=True, text=True, check=True).stdout
        m = re.search(r"p50 ([0-9.]+) ms, p99 ([0-9.]+) ms", out)
        rows.append(_row("native-cpp", batch, float(m.group(1)), float(m.group(2))))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ochre.bench.native", description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=None, help="world-model run (default: tiny preset, random weights)")
    p.add_argument("--tokenizer", default=None, help="its tokenizer run (default: the one beside it)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=200, help="timed steps per row")
    p.add_argument("--binary", default=None, help="ochre-native to time as well (e.g. build/ochre-native)")
    p.add_argument("--packages", default="runs/bench-native", help="where packages are compiled and kept")
    p.add_argument("--out", default=None, help="result file (default bench/results/native_<device>_<date>.json)")
    args = p.parse_args(argv)
    root = Path(args.packages)
    ckpt, tokenizer = _models(args, root)
    rows = []
    for b in args.batch:
        for r in bench_batch(ckpt, tokenizer, b, root / f"b{b}", args.runs, args.binary):
            print(json.dumps(r))
            rows.append(r)
    result = {**header("cpu"), "threads": torch.get_num_threads(), "model": str(ckpt), "rows": rows}
    out = Path(args.out) if args.out else result_path("native")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
