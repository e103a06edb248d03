"""The C allocator's settings (ochre.device.keep_large_blocks) against glibc's defaults, on the CPU work
whose tensors pass 32 MB: the live step with its decode at several batches (what `ochre eval` and
`ochre serve` step), the tokenizer's encode and decode of a 256-frame chunk (eval, tokenize), and an
eager world-model train step (`ochre train`, the tiny preset's batch).

    python -m ochre.bench.allocator [--rounds 2] [--checkpoint RUN] [--out FILE]

Each setting runs in its own process (the setting is process-wide, made once at start), the two
taking turns for --rounds rounds so that a machine that drifts slows both alike; a row is one
process's median and 99th percentile over its timed calls (warm-up excluded), with the minor page
faults per call. The summary compares the medians of the two settings' rows.
Writes bench/results/allocator_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from ochre.bench.common import header, result_path, stats_ms, time_calls
from ochre.io import write_json_atomic

SETTINGS = ("system", "keep")           # OCHRE_MALLOC=system: glibc's defaults; keep: ochre's
LIVE_BATCHES = (1, 8, 16, 32)


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(fn, warmup: int, runs: int) -> dict:
    """ms p50/p99 of `runs` calls after `warmup` (ochre.measure.time_calls), and the minor page faults
    per timed call."""
    for _ in range(warmup):
        fn()
    before = _faults()
    samples = time_calls(fn, warmup=0, runs=runs)
    return {**stats_ms(samples), "faults_per_call": (_faults() - before) / runs}


def worker(checkpoint: str) -> list[dict]:
    """Every row under this process's allocator setting."""
    from ochre.device import keep_large_blocks
    from ochre.eval.dreamers import Codec
    from ochre.models.dynamics import Dynamics
    from ochre.models.lookup import from_run, load, shipped
    from ochre.models.step import draw_noise, live_step, noise_generator, render
    from ochre.train.world import WorldLoss, recipe

    setting = "keep" if keep_large_blocks() else "system"
    cpu = torch.device("cpu")
    tok, dyn, sampling = load(from_run(checkpoint) if checkpoint else shipped(), cpu)
    rows = []
    with torch.no_grad():
        for b in LIVE_BATCHES:
            gen = noise_generator(0)
            box = {"tokens": torch.randint(0, dyn.config.codebook_size, (b, 16, 16), generator=gen),
                   "state": dyn.init_state(b, cpu)}

            def step(b=b, gen=gen, box=box):
                box["tokens"], _, box["state"] = live_step(dyn, box["tokens"], torch.zeros(b, 4),
                                                           draw_noise(gen, b, 16), box["state"], sampling)
                render(tok, box["tokens"], box["state"][-1])
            r = _timed(step, warmup=3, runs=max(10, 160 // b))
            rows.append({"what": "live step + decode", "batch": b, **r, "ms_per_frame": r["ms_p50"] / b})
        codec = Codec(tok)
        frames = np.random.default_rng(0).integers(0, 256, (256, 64, 64, 3), dtype=np.uint8)
        rows.append({"what": "tokenizer encode + decode", "batch": 256,
                     **_timed(lambda: codec.reconstruct(frames), warmup=1, runs=5)})
    cfg, tcfg, train_sampling = recipe("ochre", "tiny")
    torch.manual_seed(0)
    net = Dynamics(cfg)
    loss_fn, opt = WorldLoss(net, tcfg, train_sampling), torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.codebook_size, (tcfg.batch, tcfg.window, cfg.grid, cfg.grid), generator=gen)
    actions = torch.rand(tcfg.batch, tcfg.window - 1, 4, generator=gen) * 2 - 1

    def train_step():
        loss, _ = loss_fn(tokens, actions, tcfg.unroll)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    rows.append({"what": "world-model train step, eager", "batch": tcfg.batch, "window": tcfg.window,
                 "unroll": tcfg.unroll, **_timed(train_step, warmup=2, runs=5)})
    return [{"malloc": setting, **r} for r in rows]


def summary(rows: list[dict]) -> list[dict]:
    """Per measured thing: each setting's median of its rows' p50 and page faults, and system / keep."""
    out = []
    for what, batch in sorted({(r["what"], r["batch"]) for r in rows}):
        def median(field, setting, what=what, batch=batch):
            return float(np.median([r[field] for r in rows
                                    if (r["what"], r["batch"], r["malloc"]) == (what, batch, setting)]))
        ms = {s: median("ms_p50", s) for s in SETTINGS}
        out.append({"what": what, "batch": batch, "ms_p50_system": ms["system"], "ms_p50_keep": ms["keep"],
                    "speedup": ms["system"] / ms["keep"],
                    **{f"faults_per_call_{s}": median("faults_per_call", s) for s in SETTINGS}})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ochre.bench.allocator", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="turns of each setting (default 2)")
    p.add_argument("--checkpoint", default=None, help="world-model run (default: the shipped model)")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.checkpoint)))
        return 0
    rows = []
    for i in range(args.rounds):
        for setting in SETTINGS:
            env = {**os.environ, "OCHRE_MALLOC": setting}
            more = ["--checkpoint", args.checkpoint] if args.checkpoint else []
            r = subprocess.run([sys.executable, "-m", "ochre.bench.allocator", "--worker", *more],
                               capture_output=True, text=True, env=env, timeout=1800)
            if r.returncode != 0:
                print(r.stderr, file=sys.stderr)
                return 1
            got = json.loads(r.stdout.strip().splitlines()[-1])
            rows += [{**row, "round": i} for row in got]
            print(f"round {i + 1}/{args.rounds} {setting}: " + ", ".join(
                f"{row['what']} b{row['batch']} {row['ms_p50']:.1f} ms" for row in got), file=sys.stderr)
    out = Path(args.out) if args.out else result_path("allocator")
    record = {"benchmark": "allocator", **header("cpu"), "threads": torch.get_num_threads(), "rounds": args.rounds,
              "model": Path(args.checkpoint).name if args.checkpoint else "shipped", "what": __doc__,
              "summary": summary(rows), "rows": rows}
    write_json_atomic(out, record)
    for s in record["summary"]:
        print(f"{s['what']:32s} b{s['batch']:<4d} {s['ms_p50_system']:9.1f} -> {s['ms_p50_keep']:9.1f} ms "
              f"({s['speedup']:.2f}x; page faults a call {s['faults_per_call_system']:.0f} -> "
              f"{s['faults_per_call_keep']:.0f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
