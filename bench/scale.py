"""Data stages beyond one machine: `ochre prepare` on Ray beside the local pool, and Ray's cost per task.

    python -m ochre.bench.scale [--episodes 16] [--steps 400] [--vpt-episodes 4] [--repeats 3] [--out FILE]

Rows (one run, the same synthetic recordings, the same machine):
  prepare   source frames/s, median over --repeats runs after one untimed run, each into a fresh folder:
            the local pool at 1 and N processes (each run spawns its pool, as every `ochre prepare`
            does), and Ray at 1 and N workers (a private cluster of that many CPUs, started once per
            variant: its start is the `startup` row, paid once per cluster, not per run)
  overhead  what Ray adds per task: an empty task's round trip (submit, run, get) one at a time, median
            and p99; and empty tasks per second through ochre's ordered map (the window of tasks in flight
            that prepare uses), i.e. the scheduling cost per recording when many are queued
  startup   seconds to start a private cluster of N CPUs and run a first task on it
  prepare at VPT's size: the same comparison at N workers on --vpt-episodes recordings in the VPT layout at
            its 640x360 (rendered at 160x160, upscaled 4x and cropped; H.264 yuv420p CRF 23 as a player
            would hold it): the per-core rate that the README's "VPT contractor data on N nodes" uses
N is every core this process may use. The ratios compare each Ray row with the local pool of as many workers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from ochre.bench.common import header, result_path, stats_ms
from ochre.data.prepare import PrepareConfig, prepare
from ochre.parallel import Engine, cpu_count, ordered_map


def _noop(x):
    return x


def make_vpt_sized(out: Path, episodes: int, steps: int) -> None:
    """VPT-layout recordings at VPT's 640x360 from the synthetic world (see the module docstring)."""
    from ochre.data.synth.episodes import render_episode
    from ochre.data.synth.writers import write_vpt
    from ochre.data.video import write_mp4

    out.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        ep = render_episode(0, i, steps, 160, mouse_counts=True)
        frames = ep.frames.repeat(4, axis=1).repeat(4, axis=2)[:, 140:500]              # (N+1, 360, 640, 3)
        write_vpt(out / f"vpt_{i:03d}", frames, ep.camera, ep.keys)
        # Re-encoded as a player would hold it: VPT's videos are not near-lossless 4:4:4 like our clips.
        write_mp4(out / f"vpt_{i:03d}.mp4", frames, 20, crf=23, gop=100, pix_fmt="yuv420p")


def _time_prepare(src: Path, work: Path, engine: Engine, repeats: int, data: str = "synthetic 64x64") -> dict:
    runs = []
    for i in range(repeats + 1):                        # the first run warms workers and file caches
        t0 = time.perf_counter()
        summary = prepare(src, work / f"{src.name}-{engine.name}-{engine.workers}-{i}", PrepareConfig(),
                          progress=False, engine=engine)
        if i:
            runs.append(time.perf_counter() - t0)
    seconds = statistics.median(runs)
    frames = summary["states_processed"]
    source_bytes = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    return {"stage": "prepare", "data": data, "engine": engine.name, "workers": engine.workers,
            "recordings": summary["recordings"], "source_bytes_per_frame": source_bytes / summary["states_processed"],
            "frames": frames, "seconds_median": seconds, "seconds_runs": runs, "frames_per_s": frames / seconds}


def _ray_rows(ray, src: Path, work: Path, workers: int, repeats: int) -> list[dict]:
    rows = [_time_prepare(src, work, Engine("ray", workers=workers), repeats)]
    noop = ray.remote(num_cpus=1)(_noop)
    ray.get([noop.remote(i) for i in range(20)])        # warm: workers started and imported
    trips = []
    for i in range(200):
        t0 = time.perf_counter()
        ray.get(noop.remote(i))
        trips.append(time.perf_counter() - t0)
    n = 1000
    with ordered_map(Engine("ray", workers=workers), n) as mapper:
        t0 = time.perf_counter()
        assert list(mapper(_noop, range(n))) == list(range(n))
        pipelined = time.perf_counter() - t0
    rows.append({"stage": "overhead", "engine": "ray", "workers": workers, "what": "empty task round trip",
                 **stats_ms(trips)})
    rows.append({"stage": "overhead", "engine": "ray", "workers": workers, "what": "empty tasks, ordered map",
                 "tasks": n, "tasks_per_s": n / pipelined, "ms_per_task": 1e3 * pipelined / n})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=16)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--vpt-episodes", type=int, default=4, help="recordings at VPT's 640x360")
    p.add_argument("--vpt-steps", type=int, default=400, help="ticks per 640x360 recording")
    p.add_argument("--repeats", type=int, default=3, help="timed prepare runs per variant (median)")
    p.add_argument("--out", default=None, help="result JSON (default bench/results/scale_cpu_DATE.json)")
    args = p.parse_args(argv)
    import logging

    import ray

    from ochre.cli import main as cli

    cores = cpu_count()
    load_before = os.getloadavg()
    rows = []
    vpt = f"VPT layout 640x360, {args.vpt_steps} ticks each"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if cli(["synth", str(work / "src"), "--episodes", str(args.episodes), "--steps", str(args.steps)]) != 0:
            raise RuntimeError("ochre synth failed")
        make_vpt_sized(work / "vpt", args.vpt_episodes, args.vpt_steps)
        for workers in sorted({1, cores}):
            rows.append(_time_prepare(work / "src", work, Engine("local", workers=workers), args.repeats))
            if workers == cores:
                rows.append(_time_prepare(work / "vpt", work, Engine("local", workers=workers), args.repeats, vpt))
            t0 = time.perf_counter()
            ray.init(address="local", num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, logging_level=logging.WARNING)
            ray.get(ray.remote(num_cpus=1)(_noop).remote(0))
            startup = time.perf_counter() - t0
            try:
                rows += _ray_rows(ray, work / "src", work, workers, args.repeats)
                if workers == cores:
                    rows.append(_time_prepare(work / "vpt", work, Engine("ray", workers=workers), args.repeats, vpt))
            finally:
                ray.shutdown()
            rows.append({"stage": "startup", "engine": "ray", "workers": workers, "seconds": startup})
    local = {(r["data"], r["workers"]): r for r in rows if r["stage"] == "prepare" and r["engine"] == "local"}
    for r in rows:
        if r["stage"] == "prepare" and r["engine"] == "ray":
            base = local[r["data"], r["workers"]]
            r["ratio_vs_local"] = r["frames_per_s"] / base["frames_per_s"]
            r["seconds_per_recording_vs_local"] = (r["seconds_median"] - base["seconds_median"]) / r["recordings"]
    result = {**header("cpu"), "theme": "scale", "ray": ray.__version__, "episodes": args.episodes,
              "steps": args.steps, "vpt_episodes": args.vpt_episodes, "vpt_steps": args.vpt_steps,
              "repeats": args.repeats,
              # Other work on the machine shows here (several engineers share it): 1-minute load averages.
              "load_average_before_after": [load_before[0], os.getloadavg()[0]], "rows": rows}
    out = Path(args.out) if args.out else result_path("scale")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        if r["stage"] == "prepare":
            ratio = f"  {r['ratio_vs_local']:.2f}x local" if "ratio_vs_local" in r else ""
            print(f"prepare  {r['engine']:<5} {r['workers']} workers  {r['frames_per_s']:>7.0f} source frames/s{ratio}"
                  f"  ({r['data']})")
        elif r["stage"] == "overhead" and "ms_p50" in r:
            print(f"ray      {r['workers']} workers  empty task round trip {r['ms_p50']:.2f} ms "
                  f"(p99 {r['ms_p99']:.2f})")
        elif r["stage"] == "overhead":
            print(f"ray      {r['workers']} workers  ordered map {r['ms_per_task']:.2f} ms per empty task")
        else:
            print(f"ray      {r['workers']} workers  cluster start {r['seconds']:.1f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
