"""Data throughput: synth, prepare and the window loader, each against a naive baseline.

    python -m ochre.bench.data [--episodes 16] [--steps 400] [--out FILE]

Rows (one run, same data, same machine):
  synth      rendered + encoded source frames/s
  prepare    source frames/s with all cores  vs  the same pipeline on one process (CLI, wall time)
  loader     frames/s of random 16-frame windows, one worker (the main process):
             clip shards + decord  vs  per-trajectory .npz of raw frames (load, slice)
                                   vs  decoding the source recording.mp4 directly
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from ochre.bench.common import header, result_path
from ochre.data.loader import WindowDataset, read_index
from ochre.data.sources import find_recordings, load_recording
from ochre.data.video import decode_frames


def bench_synth(src: Path, episodes: int, steps: int) -> dict:
    from ochre.cli import main

    t0 = time.perf_counter()
    rc = main(["synth", str(src), "--episodes", str(episodes), "--steps", str(steps), "--seed", "0"])
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError("ochre synth failed")
    frames = episodes * (steps + 1)
    return {"stage": "synth", "variant": "all cores", "frames": frames, "seconds": seconds,
            "frames_per_s": frames / seconds}


def bench_prepare(src: Path, work: Path) -> list[dict]:
    # Through the CLI in a fresh process, as users run it: worker processes are spawned from a
    # light main module (this one imports torch, which would add seconds to every spawn).
    import subprocess
    import sys

    rows = []
    for variant, workers in (("serial (1 process)", 1), ("all cores", None)):
        out = work / f"prepared-{workers or 'all'}"
        cmd = [sys.executable, "-m", "ochre", "prepare", str(src), str(out)]
        cmd += ["--workers", str(workers)] if workers else []
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        report = json.loads((out / "report.json").read_text())
        frames = sum(e.get("states", 0) for e in report["recordings"])
        rows.append({"stage": "prepare", "variant": variant, "frames": frames, "seconds": seconds,
                     "frames_per_s": frames / seconds})
    rows[1]["ratio_vs_serial"] = rows[1]["frames_per_s"] / rows[0]["frames_per_s"]
    return rows


def _loader_shards(prepared: Path, windows: int, t: int) -> tuple[int, float]:
    ds = WindowDataset(prepared, window=t, split="all", shuffle=True, seed=1)
    frames, t0, n = 0, time.perf_counter(), 0
    while n < windows:
        ds.set_epoch(n)
        for w in ds:
            frames += len(w["frames"])
            n += 1
            if n >= windows:
                break
    return frames, time.perf_counter() - t0


def _npz_baseline(src: Path, work: Path, windows: int, t: int) -> tuple[int, float]:
    # Naive: each trajectory's kept frames stored raw in one compressed .npz; a window loads the file.
    from ochre.actions import kept_ticks

    paths = []
    for i, rec in enumerate(find_recordings(src)):
        traj = load_recording(rec, 64)
        p = work / f"traj{i}.npz"
        np.savez_compressed(p, frames=traj.frames[kept_ticks(len(traj.frames), 8)])
        paths.append(p)
    rng, frames, t0 = random.Random(1), 0, time.perf_counter()
    for _ in range(windows):
        with np.load(rng.choice(paths)) as z:
            arr = z["frames"]
        s = rng.randrange(len(arr) - t + 1)
        frames += len(np.ascontiguousarray(arr[s:s + t]))
    return frames, time.perf_counter() - t0


def _source_mp4_baseline(src: Path, prepared: Path, windows: int, t: int) -> tuple[int, float]:
    # Naive: decode the 20 Hz source recording at the kept ticks of a random window.
    index = read_index(prepared)
    recs = {r.name: r for r in find_recordings(src)}
    rng, frames, t0 = random.Random(1), 0, time.perf_counter()
    report = json.loads((prepared / "report.json").read_text())
    kept = {e["source"]: e for e in report["recordings"] if e["status"] == "kept"}
    names = [n for n in kept if n in recs]
    from ochre.actions import kept_ticks

    for _ in range(windows):
        e = kept[rng.choice(names)]
        rec = recs[e["source"]]
        ticks = kept_ticks(e["states"], index["fps"])
        s = rng.randrange(len(ticks) - t + 1)
        video = rec.path / "recording.mp4" if rec.layout == "minerl" else rec.path
        frames += len(decode_frames(str(video), (ticks[s:s + t] + e["loading_frames"]).tolist(), size=64))
    return frames, time.perf_counter() - t0


def bench_loader(src: Path, prepared: Path, work: Path, windows: int, t: int = 16) -> list[dict]:
    rows = []
    for variant, fn in (("clip shards + decord", lambda: _loader_shards(prepared, windows, t)),
                        ("naive: per-trajectory .npz", lambda: _npz_baseline(src, work, windows, t)),
                        ("naive: decode source mp4", lambda: _source_mp4_baseline(src, prepared, windows, t))):
        frames, seconds = fn()
        rows.append({"stage": "loader", "variant": variant, "window": t, "frames": frames,
                     "seconds": seconds, "frames_per_s": frames / seconds, "workers": 1})
    for r in rows[1:]:
        r["shards_ratio_vs_this"] = rows[0]["frames_per_s"] / r["frames_per_s"]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--windows", type=int, default=300, help="random windows per loader variant")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/data_cpu_DATE.json)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [bench_synth(work / "src", args.episodes, args.steps)]
        rows += bench_prepare(work / "src", work)
        rows += bench_loader(work / "src", work / "prepared-all", work, args.windows)
    result = {**header("cpu"), "theme": "data", "episodes": args.episodes, "steps": args.steps, "rows": rows}
    out = Path(args.out) if args.out else result_path("data")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'stage':<8} {'variant':<30} {'frames/s':>10}  ratio")
    for r in rows:
        ratio = r.get("ratio_vs_serial") or r.get("shards_ratio_vs_this") or ""
        print(f"{r['stage']:<8} {r['variant']:<30} {r['frames_per_s']:>10.0f}  {ratio and f'{ratio:.2f}x'}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
