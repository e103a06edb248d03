"""World-model train-step throughput: eager, torch.compile, and (GPU) compile + the fused Triton step.

One step = the rollout loss of `ochre train` (teacher-forced window, then U steps on the model's
own samples) -> backward -> clip -> AdamW, on fixed random tokens (throughput, not quality),
at the same batch for every variant. Frames/s counts predicted frames: B x (T - 1).
Also the fused step alone (gate arithmetic, forward + backward) against the unfused torch
reference, at the model's shapes.

    python -m ochre.bench.train [--device cpu|cuda] [--preset tiny|base] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from ochre.bench.common import header, result_path, stats_ms
from ochre.bench.kernels import time_ms
from ochre.io import write_json_atomic


def _variants(device: str) -> list[tuple[str, bool, str]]:
    # (name, compiled, impl). On CPU "auto" is the reference behind the custom op: the same graph
    # the GPU runs, without Triton.
    out = [("eager", False, "torch"), ("compiled", True, "torch")]
    out.append(("compiled+triton", True, "triton") if device == "cuda" else ("compiled+op", True, "auto"))
    return out


def bench_world_train(device: str, preset: str, batch: int | None, budget_s: float, emit,
                      runs: dict | None = None, **train_overrides) -> None:
    """A row per variant (eager, compiled, compiled + fused op), each emitted once measured; a
    variant that raises (a compile error, say) gets an error row and the others run on.
    train_overrides: WorldTrainConfig fields (a dry run shortens the window). One compile per
    compiled variant: the whole window with its backward, as `ochre train --compile` compiles it."""
    from ochre.models.dynamics import Dynamics
    from ochre.train.world import WorldLoss, recipe

    cfg, tcfg, sampling = recipe("ochre", preset, **train_overrides)
    batch = batch or tcfg.batch
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.codebook_size, (batch, tcfg.window, cfg.grid, cfg.grid), generator=gen).to(device)
    actions = (torch.rand(batch, tcfg.window - 1, 4, generator=gen) * 2 - 1).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    gpu = device == "cuda"
    runs = runs or {"max_runs": 50 if gpu else 10, "min_runs": 10 if gpu else 4, "warmup": 2}
    eager_ms = None
    for name, compiled, impl in _variants(device):
        row = {"variant": f"world_train/{name}", "preset": preset, "batch": batch, "window": tcfg.window,
               "unroll": tcfg.unroll, "autocast": "bf16" if gpu else None}
        try:
            torch.manual_seed(0)
            cfg.impl = impl
            model = Dynamics(cfg).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            loss_fn = WorldLoss(model, tcfg, sampling)
            loss_fn = torch.compile(loss_fn, fullgraph=True) if compiled else loss_fn

            def step(loss_fn=loss_fn, model=model, opt=opt):
                with autocast:
                    loss, _ = loss_fn(tokens, actions, tcfg.unroll)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            step()                                      # compiles forward and backward where compiled
            first_s = time.perf_counter() - t0
            st = stats_ms(time_ms(step, device, budget_s, **runs))
        except Exception as e:                          # one variant's failure is its row
            emit({**row, "error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"[:500]})
            continue
        eager_ms = st["ms_p50"] if name == "eager" else eager_ms
        frames = batch * (tcfg.window - 1)
        emit({**row, **st, "first_step_s": round(first_s, 2), "frames_per_s": frames / (st["ms_p50"] * 1e-3),
              **({"x_vs_eager": eager_ms / st["ms_p50"]} if eager_ms else {})})


def bench_fused_step(device: str, preset: str, batch: int, budget_s: float, emit) -> None:
    """The gate arithmetic of one step at the model's widths: fused op vs the torch reference."""
    from ochre.bench.kernels import bench_film_gru, film_gru_variants
    from ochre.models.dynamics import DynamicsConfig

    cfg = DynamicsConfig.preset(preset)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    fns = film_gru_variants(device)
    for c in sorted(set(cfg.hidden)):
        bench_film_gru(batch, c, dtype, device, budget_s, fns, lambda r: emit(dict(r, section="fused_step")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.train", description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", choices=("tiny", "base"), default=None, help="default: base on GPU, tiny on CPU")
    ap.add_argument("--batch", type=int, default=None, help="windows per step (default: the preset's)")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed steps per row")
    ap.add_argument("--out", type=Path, default=None,
                    help="result JSON (default bench/results/train_<device>_<date>.json)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA GPU")
    preset = args.preset or ("base" if args.device == "cuda" else "tiny")
    budget = args.budget if args.budget is not None else (2.0 if args.device == "cuda" else 8.0)
    load_before = os.getloadavg()[0]
    rows: list[dict] = []
    bench_world_train(args.device, preset, args.batch, budget, rows.append)
    for r in rows:
        print(f"{r['variant']:<28} {preset} B={r['batch']} T={r['window']} U={r['unroll']}: " + (r.get("error") or
              f"p50 {r['ms_p50']:.1f} ms, p99 {r['ms_p99']:.1f} ms, {r['frames_per_s']:.0f} frames/s "
              f"({r.get('x_vs_eager', float('nan')):.2f}x eager)"))
    fused: list[dict] = []
    bench_fused_step(args.device, preset, rows[0]["batch"], budget / 4, fused.append)
    for r in fused:
        if "ms_p50" in r:
            print(f"{r['variant']:<28} B={r['B']} C={r['C']}: p50 {r['ms_p50']:.3f} ms "
                  f"({r.get('x_vs_reference', float('nan')):.2f}x reference)")
    result = {"benchmark": "train", **header(args.device), "torch_threads": torch.get_num_threads(),
              "loadavg_1m": [load_before, os.getloadavg()[0]], "rows": rows + fused}
    out = args.out or result_path("train", args.device)
    write_json_atomic(out, result)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["bench_world_train", "bench_fused_step", "main"]
