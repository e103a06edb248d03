"""The fused Triton kernels against the torch ways of writing them: nearest-code search, the
FiLM-ConvGRU step, and the tokenizer train step.

    python -m ochre.bench.kernels [--out FILE] [--device cpu|cuda] [--only SECTION ...]

Legend: N vectors, D code dim, K codebook size (2048, the base tokenizer's).
Variants, all returning (N,) int64 indices:
  triton         ochre.kernels.nearest_code(impl="triton"): distance + argmin fused, no N x K matrix
  reference      nearest_code_ref: torch.cdist (its default, the matmul form above 25 rows) + argmin
  cdist_exact    torch.cdist on differences (compute_mode="donot_use_mm_for_euclid_dist") + argmin
  matmul         (||z||^2 - 2 z E^T + ||E||^2).argmin(1), written out in torch
  compiled_ref   torch.compile(nearest_code_ref), dynamic shapes: one compile per dtype
Then the FiLM-ConvGRU step (B batch, C state channels, on the 16x16 token grid), forward and
backward of all four inputs together:
  film_gru/triton        ochre.kernels.film_gru_step(impl="triton"): one kernel each way
  film_gru/reference     film_gru_step_ref with autograd: 16 elementwise kernels forward
  film_gru/compiled_ref  torch.compile(film_gru_step_ref), forward and backward, dynamic shapes
GB/s counts the fused kernels' traffic (23 (B, C, 16, 16) tensors); `max_diff` is the largest
gradient difference from the reference's.
Then the tokenizer train step (frames/s): eager vs compiled, and compiled+triton on GPU.
Timing: warm-up calls (and compilation) untimed; each timed call on its own, with CUDA events
on GPU and perf_counter on CPU; median and p99 over the runs. GB/s counts the minimum
traffic (read z and the codebook once, write the indices); TFLOP/s counts the 2*N*K*D of
the dot products. Every variant's indices are compared with the reference (`agree`).
Rows go to `emit` the moment they are measured (the GPU session saves each one, bench/rows.py); a
variant that raises gets an error row and the others run on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ochre.bench.common import header, result_path, stats_ms
from ochre.io import write_json_atomic
from ochre.kernels import film_gru_step, film_gru_step_ref, nearest_code, nearest_code_ref

K = 2048
DIMS = (32, 64)
N_GPU = (16384, 65536)       # a tokenizer batch of 64 and 256 frames (256 codes each)
# The CPU stops at 16,384 rows: at 65,536 one reference call alone takes seconds and its
# N x K distance matrix is 512 MB, and the whole run has to stay under two minutes.
N_CPU = (4096, 16384)
# (B, C) on the model's 16x16 grid: the tiny world model's width at its training batch (16) and a
# live batch of 64 players, and the base model's width at its training batch.
FILM_SHAPES = [(16, 64), (64, 64), (64, 256)]
GRID = 16
SECTIONS = ("nearest_code", "film_gru", "tokenizer")
NOTES = ["nearest_code GB/s = (N*D + K*D) * itemsize + N*8 bytes / p50: the least any variant must move",
         f"film_gru: (B, C) on {GRID}x{GRID}; forward + backward of gx, gh, h, film",
         "film_gru GB/s = 23 * B*C*H*W * itemsize / p50: the fused kernels' traffic (read 7, write 1; "
         "read 8, write 7)",
         "compiled variants: torch.compile with dynamic shapes, one compile per dtype (first_call_s holds it)"]


def _cdist_exact(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    return torch.cdist(z.float(), codebook.float(), compute_mode="donot_use_mm_for_euclid_dist").argmin(1)


def _matmul(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    z, codebook = z.float(), codebook.float()
    d = z.square().sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.square().sum(1)  # (N, K)
    return d.argmin(1)


def variants(device: str) -> dict[str, Callable | str]:
    """name -> function, or the reason it does not run here; the reference first (every later
    row's x_vs_reference divides by it). Build once per run: compiled_ref is compiled with
    dynamic shapes, once per dtype for every (N, D), where a static graph per shape cost a
    compile each (with a dynamo reset between shapes: 12 on a GPU run)."""
    out: dict[str, Callable | str] = {"reference": nearest_code_ref}
    if device == "cuda":
        out["triton"] = lambda z, e: nearest_code(z, e, impl="triton")
    else:
        out["triton"] = "needs a CUDA GPU (TRITON_INTERPRET runs it on CPU for correctness only, far too slow to time)"
    out["cdist_exact"] = _cdist_exact
    out["matmul"] = _matmul
    out["compiled_ref"] = torch.compile(nearest_code_ref, dynamic=True)
    return out


def time_ms(fn: Callable[[], object], device: str, budget_s: float, max_runs: int, min_runs: int,
            warmup: int) -> list[float]:
    """Seconds per call: `warmup` untimed calls (compilation lands there), then timed calls
    until `budget_s` is spent (at least `min_runs`, at most `max_runs`)."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    if device == "cuda":
        torch.cuda.synchronize()
        while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() < deadline):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()  # one call at a time: no queueing between runs inflates the median
            samples.append(start.elapsed_time(end) / 1e3)
    else:
        while len(samples) < max_runs and (len(samples) < min_runs or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
    return samples


def _runs(device: str) -> dict:
    gpu = device == "cuda"
    return {"max_runs": 200 if gpu else 50, "min_runs": 20 if gpu else 5, "warmup": 3 if gpu else 1}


def _error(row: dict, e: BaseException) -> dict:
    return {**row, "error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"[:500]}


def bench_shape(n: int, d: int, dtype: torch.dtype, device: str, budget_s: float, fns: dict, emit,
                k: int = K, runs: dict | None = None) -> None:
    """One row per variant of `fns` (variants()) at (N, D), each emitted as soon as it is measured;
    a variant that raises gets an error row and the others run on."""
    gen = torch.Generator(device="cpu").manual_seed(n * 1000 + d)
    z = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
    codebook = torch.randn(k, d, generator=gen).to(device=device, dtype=dtype)
    ref = nearest_code_ref(z, codebook)
    size = torch.finfo(dtype).bits // 8
    nbytes = (n * d + k * d) * size + n * 8
    ref_ms = None
    for name, fn in fns.items():
        row = {"variant": name, "N": n, "K": k, "D": d, "dtype": str(dtype).removeprefix("torch.")}
        if isinstance(fn, str):
            emit({**row, "skipped": fn})
            continue
        try:
            t0 = time.perf_counter()
            idx = fn(z, codebook)  # the first, untimed call: compiles where there is anything to compile
            first_s = time.perf_counter() - t0
            st = stats_ms(time_ms(lambda fn=fn: fn(z, codebook), device, budget_s, **(runs or _runs(device))))
        except Exception as e:          # one variant's failure is its row (a compile error, say)
            emit(_error(row, e))
            continue
        ref_ms = st["ms_p50"] if name == "reference" else ref_ms
        emit({**row, **st, "first_call_s": round(first_s, 2), "gbps": nbytes / (st["ms_p50"] * 1e-3) / 1e9,
              "tflops": 2 * n * k * d / (st["ms_p50"] * 1e-3) / 1e12, "agree": float((idx == ref).float().mean()),
              **({"x_vs_reference": ref_ms / st["ms_p50"]} if ref_ms else {})})


def film_gru_variants(device: str) -> dict[str, Callable | str]:
    """name -> step function (gx, gh, h, film) -> h', or the reason it does not run here; the
    reference first. compiled_ref: dynamic shapes, one compile (forward and backward) per dtype."""
    out: dict[str, Callable | str] = {"film_gru/reference": film_gru_step_ref}
    if device == "cuda":
        out["film_gru/triton"] = lambda *x: film_gru_step(*x, impl="triton")
    else:
        out["film_gru/triton"] = "needs a CUDA GPU (TRITON_INTERPRET runs it on CPU for correctness only)"
    out["film_gru/compiled_ref"] = torch.compile(film_gru_step_ref, dynamic=True)
    return out


def bench_film_gru(b: int, c: int, dtype: torch.dtype, device: str, budget_s: float, fns: dict, emit,
                   runs: dict | None = None) -> None:
    """Forward + backward of one step: h' and the gradients of gx, gh, h and film; a row per
    variant of `fns` (film_gru_variants()), emitted as measured."""
    gen = torch.Generator(device="cpu").manual_seed(b * 1000 + c)
    shapes = [(b, 3 * c, GRID, GRID), (b, 3 * c, GRID, GRID), (b, c, GRID, GRID), (b, 6 * c)]
    inputs = [torch.randn(sh, generator=gen).to(device=device, dtype=dtype).requires_grad_(True) for sh in shapes]
    grad_out = torch.randn(shapes[2], generator=gen).to(device=device, dtype=dtype)

    def fwd_bwd(fn):
        return torch.autograd.grad(fn(*inputs), inputs, grad_out)

    ref = fwd_bwd(film_gru_step_ref)
    nbytes = 23 * b * c * GRID * GRID * (torch.finfo(dtype).bits // 8)
    ref_ms = None
    for name, fn in fns.items():
        row = {"variant": name, "B": b, "C": c, "H": GRID, "W": GRID, "dtype": str(dtype).removeprefix("torch.")}
        if isinstance(fn, str):
            emit({**row, "skipped": fn})
            continue
        try:
            t0 = time.perf_counter()
            grads = fwd_bwd(fn)  # untimed: compiles forward and backward where there is anything to compile
            first_s = time.perf_counter() - t0
            st = stats_ms(time_ms(lambda fn=fn: fwd_bwd(fn), device, budget_s, **(runs or _runs(device))))
        except Exception as e:
            emit(_error(row, e))
            continue
        ref_ms = st["ms_p50"] if name == "film_gru/reference" else ref_ms
        emit({**row, **st, "first_call_s": round(first_s, 2), "gbps": nbytes / (st["ms_p50"] * 1e-3) / 1e9,
              "max_diff": max(float((g.float() - r.float()).abs().max()) for g, r in zip(grads, ref)),
              **({"x_vs_reference": ref_ms / st["ms_p50"]} if ref_ms else {})})


def print_film_gru_table(rows: list[dict]) -> None:
    print(f"{'variant':<22} {'B':>3} {'C':>4} {'dtype':<9} {'p50 ms':>9} {'p99 ms':>9} {'runs':>4} "
          f"{'GB/s':>8} {'x ref':>6} {'max_diff':>9}")
    for r in rows:
        head = f"{r['variant']:<22} {r['B']:>3} {r['C']:>4} {r['dtype']:<9}"
        if "skipped" in r or "error" in r:
            print(f"{head} {r.get('skipped') or r['error']}")
            continue
        print(f"{head} {r['ms_p50']:>9.3f} {r['ms_p99']:>9.3f} {r['runs']:>4} {r['gbps']:>8.3g} "
              f"{r.get('x_vs_reference', float('nan')):>6.2f} {r['max_diff']:>9.2g}")


def bench_tokenizer_train(device: str, preset: str, batch: int, budget_s: float, emit,
                          runs: dict | None = None) -> None:
    """Tokenizer train-step throughput: eager vs torch.compile, and on GPU with the Triton
    kernels vs the torch references inside the compiled step. One step = compute_loss ->
    backward -> AdamW -> update_codebook, on fixed random frames (throughput, not quality).
    A row per variant, emitted as measured; x_vs_eager once eager's row exists."""
    from ochre.models.tokenizer import Tokenizer, TokenizerConfig

    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8, generator=gen).to(device)
    frames = frames.contiguous(memory_format=torch.channels_last)        # as ochre train-tokenizer does
    variants = [("eager", False, "auto"), ("compiled", True, "torch")]
    if device == "cuda":
        variants.append(("compiled+triton", True, "triton"))
    eager_ms = None
    for name, compiled, impl in variants:
        row = {"variant": f"tokenizer_train/{name}", "preset": preset, "batch": batch}
        try:
            model = Tokenizer(TokenizerConfig.preset(preset, impl=impl)).to(device, memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            loss_fn = torch.compile(model.compute_loss) if compiled else model.compute_loss
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

            def step(loss_fn=loss_fn, model=model, opt=opt, autocast=autocast):
                with autocast:
                    loss, logs = loss_fn(frames)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                model.update_codebook(logs)
            t0 = time.perf_counter()
            step()                                   # compiles forward and backward where compiled
            first_s = time.perf_counter() - t0
            gpu = device == "cuda"
            st = stats_ms(time_ms(step, device, budget_s, **(runs or {"max_runs": 100 if gpu else 20,
                                                                       "min_runs": 10 if gpu else 5, "warmup": 2})))
        except Exception as e:
            emit(_error(row, e))
            continue
        eager_ms = st["ms_p50"] if name == "eager" else eager_ms
        emit({**row, **st, "first_step_s": round(first_s, 2), "frames_per_s": batch / (st["ms_p50"] * 1e-3),
              **({"x_vs_eager": eager_ms / st["ms_p50"]} if eager_ms else {})})


def kernel_sources_dirty() -> bool | None:
    """Whether the measured kernel code differs from the recorded git SHA (None: no git)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "kernels", "bench/kernels.py"],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<13} {'N':>6} {'D':>3} {'dtype':<9} {'p50 ms':>9} {'p99 ms':>9} {'runs':>4} "
          f"{'GB/s':>8} {'TFLOP/s':>8} {'x ref':>6} {'agree':>7}")
    for r in rows:
        head = f"{r['variant']:<13} {r['N']:>6} {r['D']:>3} {r['dtype']:<9}"
        if "skipped" in r or "error" in r:
            print(f"{head} {r.get('skipped') or r['error']}")
            continue
        print(f"{head} {r['ms_p50']:>9.3f} {r['ms_p99']:>9.3f} {r['runs']:>4} {r['gbps']:>8.3g} "
              f"{r['tflops']:>8.3g} {r.get('x_vs_reference', float('nan')):>6.2f} {r['agree']:>7.4f}")


def nearest_code_section(device: str, sizes, dims, dtypes, budget_s: float, emit, k: int = K,
                         runs: dict | None = None) -> None:
    fns = variants(device)                   # once: the compiled variant compiles once per dtype
    for dtype in dtypes:
        for d in dims:
            for n in sizes:
                bench_shape(n, d, dtype, device, budget_s, fns, emit, k, runs)


def film_gru_section(device: str, shapes, dtypes, budget_s: float, emit, runs: dict | None = None) -> None:
    fns = film_gru_variants(device)
    for dtype in dtypes:
        for b, c in shapes:
            bench_film_gru(b, c, dtype, device, budget_s, fns, emit, runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.kernels", description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None,
                    help="result JSON (default bench/results/kernels_<device>_<date>.json)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timed calls per row (default 0.5 on GPU, 1.0 on CPU)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                    help="sections to run (default: all)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda, but torch sees no CUDA GPU")
    device = args.device
    budget = args.budget if args.budget is not None else (0.5 if device == "cuda" else 1.0)
    sizes = N_GPU if device == "cuda" else N_CPU
    dtypes = (torch.float32, torch.bfloat16) if device == "cuda" else (torch.float32,)
    notes = [f"sections {args.only}; dtypes {[str(t) for t in dtypes]}"] + NOTES
    notes.append(f"nearest_code: K={K}; N in {sizes}; D in {DIMS}")
    if device == "cpu":
        notes.append(f"CPU run: N stops at {N_CPU[-1]} (65,536 takes seconds per reference call and "
                     f"a 512 MB distance matrix); {torch.get_num_threads()} torch threads")
    for note in notes:
        print(note)

    load_before = os.getloadavg()[0]  # other jobs on a shared machine show up here
    rows: list[dict] = []
    if "nearest_code" in args.only:
        nc_rows: list[dict] = []
        nearest_code_section(device, sizes, DIMS, dtypes, budget, nc_rows.append)
        print_table(nc_rows)
        rows += nc_rows
    if "film_gru" in args.only:
        film_rows: list[dict] = []
        film_gru_section(device, FILM_SHAPES, dtypes, budget, film_rows.append)
        print_film_gru_table(film_rows)
        rows += film_rows
    if "tokenizer" in args.only:
        preset, batch = ("base", 128) if device == "cuda" else ("tiny", 32)
        train_rows: list[dict] = []
        bench_tokenizer_train(device, preset, batch, budget * 4, train_rows.append)
        for r in train_rows:
            print(f"{r['variant']:<28} {preset} B={batch}: " + (r.get("error") or
                  f"p50 {r['ms_p50']:.1f} ms, p99 {r['ms_p99']:.1f} ms, {r['frames_per_s']:.0f} frames/s "
                  f"({r.get('x_vs_eager', float('nan')):.2f}x eager)"))
        rows += train_rows
    result = {"benchmark": "kernels", "sections": args.only, **header(device),
              "kernel_sources_dirty": kernel_sources_dirty(), "device_kind": device,
              "torch_threads": torch.get_num_threads(), "loadavg_1m": [load_before, os.getloadavg()[0]],
              "notes": notes, "rows": rows}
    out = args.out or result_path("kernels", device)
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
