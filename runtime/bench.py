"""`ochre bench`: live latency of each runtime backend, the bench JSON of docs/runtime.md#bench-rows and a plot.

What is timed: stepper.step(actions) — the world-model step with its in-graph sampling, the decode
to RGB, and the frames back on the host — i.e. one live frame for B players. Warm-up steps (and
compilation) are excluded; the step returns host frames, so every sample is synchronised.
Every backend runs with the same intra-op threads and its own preallocated buffers; the torch row
is eager torch under inference_mode, the honest baseline the others are divided by.
The backends of one batch take turns: `rounds` rounds of runs/rounds steps each, so a burst of
load from another process on a shared machine lands on every backend alike instead of on one row.
Exported backends run the export folders given (one per batch), else ones made on demand in the
cache (ochre.runtime.exports): ONNX for onnxruntime and tensorrt, AOTInductor for native.
Row fields: backend, dtype, batch, fps (steps per second: each player's frame rate), step_ms_p50/p99,
frames_per_s (batch × fps: frames for all players), speedup_vs_torch (over the fp32 eager torch row
at the same batch), device and runs_on (where the work ran), runs; onnxruntime rows add the
session's providers and, on a GPU, the parity check rerun there. A backend that fails while
prepared, in its first steps (compiles, CUDA-graph capture, the first ONNX Runtime runs) or while
timed gets a row with `error` and `failed` (when) instead, and the others run on.
dtype is the precision of the convolutions and linear layers (the rest of a step is fp32): every
backend runs fp32; on a CPU with bf16 vector instructions (AVX512-BF16, AMX) compiled and native
also run bf16, which `ochre eval --dtype bf16` measures for quality. The torch row stays fp32: the
baseline.
The header adds the model, the thread count, the math settings (on a GPU every fp32 row runs with
TF32 off) and the load average before and after, because these machines are shared and latency
tails show it.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

from ochre.runtime.stepper import BACKENDS, make_stepper

SOURCE_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


BF16_BACKENDS = ("compiled", "native")         # the backends with a bf16 row where the CPU has bf16 units


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: AVX512-BF16 or AMX); elsewhere bf16
    convolutions are emulated and slower than fp32."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def default_dtypes(device: str) -> list[str]:
    return ["fp32", "bf16"] if device == "cpu" and cpu_has_bf16() else ["fp32"]


def available_backends(device: str) -> list[str]:
    out = ["torch", "compiled"]
    if importlib.util.find_spec("onnxruntime") is not None:
        out.append("onnxruntime")
    if device == "cuda" and importlib.util.find_spec("tensorrt") is not None:
        out.append("tensorrt")
    out.append("native")                     # AOTInductor packages, compiled for this device (export/aoti.py)
    return out


def _ort_device(device: str) -> str:
    """onnxruntime runs on the GPU only with onnxruntime-gpu; otherwise it is the CPU reference."""
    if device != "cuda":
        return "cpu"
    from ochre.export import ort

    return "cuda" if ort.PROVIDERS["cuda"] in ort.load().get_available_providers() else "cpu"


def physical_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _actions(batch: int, steps: int, seed: int) -> np.ndarray:
    """Random valid actions (S, B, 4): camera anywhere in [-1, 1], keys pressed or not."""
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, batch, 4)).astype(np.float32)
    actions[..., 2:] = actions[..., 2:].round()
    return actions


def _row(stepper, samples: np.ndarray, total_s: float) -> dict:
    ms = samples * 1e3
    fps = len(samples) / total_s
    return {"backend": stepper.backend, "dtype": stepper.dtype, "batch": stepper.batch, "fps": fps,
            "step_ms_p50": float(np.median(ms)),
            "step_ms_p99": float(np.percentile(ms, 99)), "frames_per_s": fps * stepper.batch, "runs": len(samples)}


def error_row(backend: str, dtype: str, batch: int, when: str, e: BaseException) -> dict:
    """The row of a backend that failed `when` (preparing, its first steps, timing): the error's type
    and first line, so one look at the JSON says what broke."""
    line = (str(e).strip().splitlines() or [""])[0]
    return {"backend": backend, "dtype": dtype, "batch": batch, "error": f"{type(e).__name__}: {line}"[:500],
            "failed": when}


def time_steppers(steppers: list, contexts: np.ndarray, runs: int, warmup: int, rounds: int = 1,
                  seed: int = 0, log=print) -> list[dict]:
    """Latency of `runs` steps of each stepper (all at one batch) after `warmup` untimed ones, with
    the same random valid actions; the steppers take turns in `rounds` rounds. A stepper that raises
    in its reset, warm-up (where compiles, CUDA-graph capture and first ONNX Runtime runs happen) or
    a timed step gets an error row and leaves the rotation; the others are timed on."""
    batch = steppers[0].batch if steppers else 1
    actions = _actions(batch, warmup + runs, seed)
    pick = np.arange(batch) % len(contexts)
    rows, live = {}, []
    for k, stepper in enumerate(steppers):
        try:
            stepper.reset(contexts[pick])
            for a in actions[:warmup]:
                stepper.step(a)
            live.append(k)
        # Any exception: a backend's failure is its row, never the run's (ONNX Runtime's errors are
        # not RuntimeError, a compiler's may be anything).
        except Exception as e:
            log(f"bench: {stepper.backend} at batch {batch} failed in its first steps: {e}")
            rows[k] = error_row(stepper.backend, stepper.dtype, batch, "first steps", e)
    samples = [np.empty(runs) for _ in steppers]
    totals = [0.0 for _ in steppers]
    bounds = np.linspace(0, runs, rounds + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        for k in list(live):
            stepper = steppers[k]
            t_all = time.perf_counter()
            try:
                for i in range(lo, hi):
                    t0 = time.perf_counter()
                    stepper.step(actions[warmup + i])
                    samples[k][i] = time.perf_counter() - t0
            except Exception as e:
                log(f"bench: {stepper.backend} at batch {batch} failed while timed: {e}")
                rows[k] = error_row(stepper.backend, stepper.dtype, batch, "timing", e)
                live.remove(k)
            totals[k] += time.perf_counter() - t_all
    for k in live:
        rows[k] = _row(steppers[k], samples[k], totals[k])
    return [rows[k] for k in sorted(rows)]


def time_stepper(stepper, contexts: np.ndarray, runs: int, warmup: int, seed: int = 0) -> dict:
    """Latency of one stepper: `runs` steps after `warmup` untimed ones."""
    return time_steppers([stepper], contexts, runs, warmup, seed=seed)[0]


def _versions() -> dict:
    import importlib.metadata as md

    from ochre.measure import versions

    out = versions()
    for pkg in ("onnxruntime-gpu", "tensorrt", "gymnasium", "pygame"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _stepper(backend: str, model, batch: int, device: str, threads: int, folders: dict, log, dtype: str = "fp32"):
    """A stepper for one row: the export folder given for (format, batch, dtype), else one from the cache."""
    from ochre.runtime.exports import ensure_for
    from ochre.runtime.stepper import EXPORTED

    where = _ort_device(device) if backend == "onnxruntime" else device
    folder = folders.get((EXPORTED.get(backend), batch, dtype)) \
        or ensure_for(backend, model, batch, dtype, device=where, log=log)
    return make_stepper(backend, model, onnx_dir=folder, aoti_dir=folder, batch=batch, device=where,
                        threads=threads, dtype=dtype)


def _device_checked(stepper, model, parity_steps: int) -> dict:
    """What a row records about where it ran: `runs_on` for every backend; for onnxruntime its
    session's providers, and on a GPU its export's parity check rerun there (raises ParityError)."""
    device = getattr(stepper, "device", "cpu")                        # a torch.device or a name
    extra = {"runs_on": getattr(device, "type", device)}
    if stepper.backend == "onnxruntime":
        extra["providers"] = list(stepper.providers)
        if stepper.device != "cpu" and parity_steps:
            from ochre.export.cli import device_parity

            report = device_parity(model, stepper.folder, stepper.device, parity_steps)
            extra["parity"] = {"device": report["device"], "steps": report["step"]["steps"], "passed": True,
                               "logits_error": report["step"]["ort_error"]["logits"],
                               "token_mismatches": report["step"]["onnxruntime_token_mismatches"]}
    return extra


def add_speedups(rows: list[dict]) -> None:
    """speedup_vs_torch on every timed row: its fps over the fp32 eager torch row's at the same batch."""
    for row in rows:
        base = next((r for r in rows if r["backend"] == "torch" and r.get("dtype", "fp32") == "fp32"
                     and r["batch"] == row["batch"] and "fps" in r), None)
        if base and "fps" in row:
            row["speedup_vs_torch"] = row["fps"] / base["fps"]


def run_bench(model, *, backends=None, batches=(1, 8), device: str = "cpu", runs: int = 200, warmup: int = 20,
              rounds: int = 4, threads: int | None = None, folders: dict | None = None, dtypes=None,
              log=print, emit=None, parity_steps: int = 8) -> dict:
    """Rows for each (backend, dtype, batch); a backend that cannot be prepared or fails in a step
    gets an "error" row instead, and the others run on. dtypes: default_dtypes(device); the non-fp32
    ones run on BF16_BACKENDS only. folders: {(export format "onnx" | "aoti", batch, dtype): folder}
    to run instead of cached exports. emit(row) is called with each row once it is final (a batch's
    timed rows when its rounds end), so a caller can save rows as they come. parity_steps: the
    rollout of onnxruntime's parity check on a GPU, before it is timed there (0: none)."""
    from ochre.measure import device_name, git_sha
    from ochre.models.checkpoint import checkpoint_hash
    from ochre.models.precision import strict_fp32

    math = strict_fp32(device)                # fp32 rows on a GPU are fp32, not TF32
    threads = threads or physical_cores()
    backends = backends or available_backends(device)
    dtypes = list(dtypes or default_dtypes(device))
    variants = [(b, d) for d in dtypes for b in backends if d == "fp32" or b in BF16_BACKENDS]
    contexts = model.context_frames()
    load_before = os.getloadavg()
    rows = []

    def add(batch_rows: list[dict]) -> None:
        add_speedups(batch_rows)
        for row in batch_rows:
            rows.append(row)
            if emit:
                emit(row)

    for batch in batches:
        steppers, order, extras, failed = [], [], [], []
        for backend, dtype in variants:
            name = label({"backend": backend, "dtype": dtype})
            try:
                if backend == "onnxruntime" and _ort_device(device) != device and batch > 1:
                    continue                          # the CPU reference row on a GPU machine: batch 1
                log(f"bench: preparing {name}, batch {batch}")
                stepper = _stepper(backend, model, batch, device, threads, folders or {}, log, dtype)
                extras.append(_device_checked(stepper, model, parity_steps))
                steppers.append(stepper)
                order.append(name)
            except Exception as e:                    # see time_steppers: any failure is the backend's row
                log(f"bench: {name} at batch {batch} cannot run here: {e}")
                failed.append(error_row(backend, dtype, batch, "preparing", e))
        add(failed)
        if steppers:
            log(f"bench: timing {', '.join(order)} at batch {batch} ({rounds} rounds of {runs // rounds} steps)")
            timed = time_steppers(steppers, contexts, runs, warmup, rounds, log=log)
            where = {(s.backend, s.dtype): x for s, x in zip(steppers, extras)}
            rows_here = [{**row, **where[row["backend"], row["dtype"]]} for row in timed]
            add([{**row, "device": row["runs_on"]} for row in rows_here])
        del steppers
    return {"benchmark": "live", "device": device_name(device), "git_sha": git_sha(), "versions": _versions(),
            "date": _dt.date.today().isoformat(), "model": model.label, "world_hash": checkpoint_hash(model.world),
            "backends": list(backends), "dtypes": dtypes, "batches": list(batches), "threads": threads, "runs": runs,
            "warmup": warmup, "rounds": rounds, "math": math,
            "what": "stepper.step: world-model step + in-graph sampling + decode, frames on the host",
            "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()), "rows": rows}


def plot(result: dict, path) -> None:
    """Bar chart: fps per backend, one group per batch, p99 latency on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ochre.io import atomic_path

    rows = [r for r in result["rows"] if "fps" in r]
    backends = list(dict.fromkeys(label(r) for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 3.4), dpi=100, squeeze=False)
    for ax, batch in zip(axes[0], batches):
        fps = [next((r["fps"] for r in rows if label(r) == b and r["batch"] == batch), 0.0) for b in backends]
        p99 = [next((r["step_ms_p99"] for r in rows if label(r) == b and r["batch"] == batch), 0.0)
               for b in backends]
        bars = ax.bar(backends, fps, color="#b5651d")
        for bar, ms in zip(bars, p99):
            ax.annotate(f"p99 {ms:.1f} ms", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(f"batch {batch}: steps/s per player")
        ax.axhline(60, color="grey", linestyle="--", linewidth=0.8)
        ax.tick_params(axis="x", labelrotation=20)
    load = result.get("loadavg_before", [float("nan")])[0]
    fig.suptitle(f"ochre live step + decode, {result['device']}, {result.get('threads', '?')} threads, "
                 f"load average {load:.1f}", fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def label(row: dict) -> str:
    """A row's name in tables and plots: the backend, and its dtype unless fp32."""
    dtype = row.get("dtype", "fp32")
    return row["backend"] if dtype == "fp32" else f"{row['backend']} {dtype}"


def table(result: dict) -> str:
    """Markdown table of the rows (README, demo report)."""
    lines = ["| backend | batch | fps (per player) | frames/s | step p50 ms | step p99 ms | vs torch |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "fps" not in r:
            lines.append(f"| {label(r)} | {r['batch']} | — | — | — | — | {r['error'][:60]} |")
            continue
        lines.append(f"| {label(r)} | {r['batch']} | {r['fps']:.1f} | {r['frames_per_s']:.1f} | "
                     f"{r['step_ms_p50']:.2f} | {r['step_ms_p99']:.2f} | {r.get('speedup_vs_torch', 1):.2f}× |")
    return "\n".join(lines)


def default_out(device: str) -> Path:
    from ochre.measure import device_tag

    tag = device_tag(device)
    root = SOURCE_RESULTS if SOURCE_RESULTS.is_dir() else Path.cwd()
    return root / f"live_{tag}_{_dt.date.today().isoformat()}.json"


def export_folders(model, onnx=(), aoti=()) -> dict:
    """{(format, batch, dtype): folder} for export folders named on the command line, each checked to be
    an export of `model` (the same world-model checkpoint, by hash)."""
    from ochre.export import aoti as ax
    from ochre.export import onnx as ox
    from ochre.models.checkpoint import checkpoint_hash

    want = checkpoint_hash(model.world)
    out = {}
    for fmt, reader, dirs in (("onnx", ox.read_manifest, onnx), ("aoti", ax.read_manifest, aoti)):
        for folder in dirs:
            m = reader(folder)
            got = m.get("sources", {}).get("world", {}).get("hash")
            if got != want:
                raise ValueError(f"{folder} was exported from another world model (hash {got}) than the one "
                                 f"benchmarked ({model.origin}, hash {want}); pass --checkpoint for it")
            out[(fmt, m["batch"], m.get("dtype", "fp32"))] = Path(folder)
    return out


def run(args) -> int:
    from ochre.io import write_json_atomic
    from ochre.models.lookup import ModelError, resolve

    device = args.device
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("ochre bench: --device cuda, but torch sees no CUDA GPU", file=sys.stderr)
            return 2
    try:
        model = resolve(args.checkpoint, args.tokenizer)
    except ModelError as e:
        print(f"ochre bench: {e}", file=sys.stderr)
        return 2
    print(f"ochre bench: {model.origin}", file=sys.stderr)
    batches = args.batch or ([1, 8] if device == "cpu" else [1, 64])
    try:
        folders = export_folders(model, args.onnx or [], args.aoti or [])
    except (FileNotFoundError, ValueError) as e:
        print(f"ochre bench: {e}", file=sys.stderr)
        return 2
    result = run_bench(model, backends=args.backends, batches=batches, device=device, runs=args.runs,
                       warmup=args.warmup, rounds=args.rounds, threads=args.threads, folders=folders,
                       dtypes=args.dtypes, log=lambda m: print(m, file=sys.stderr))
    if args.note:
        result["note"] = args.note
    out = Path(args.out) if args.out else default_out(device)
    write_json_atomic(out, result)
    plot(result, out.with_suffix(".png"))
    print(table(result))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


__all__ = ["BACKENDS", "add_speedups", "available_backends", "export_folders", "plot", "run_bench", "table",
           "time_stepper", "time_steppers"]
