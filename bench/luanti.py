"""Luanti recordings: how exact the labels are, and how fast a worker records.

    python -m ochre.bench.luanti labels [--episodes 16] [--steps 400] [--work DIR]
    python -m ochre.bench.luanti record [--episodes 4] [--steps 400] [--sizes 64 128] [--workers 1 2]
    python -m ochre.bench.luanti world LUANTI_DEMO SYNTH_DEMO

labels: records the episodes (or reuses DIR/recordings), then
  - per-frame label accuracy as written: the share of transitions whose camera label, read back by
    `ochre prepare`'s own VPT reader, is within 0.5 degrees of the change between the two frames'
    engine poses (each line's "pose");
  - how often the game did exactly what the recorder sent (the labels are what it did either way);
  - `ochre data check` on the prepared clips at 8 frames/s (the default), 10 and 20 (one game step
    per frame), and with every label shifted one prepared frame later at 10 and 20 frames/s, which
    must fail.
record: end-to-end recording rate per worker (episodes include placing the player and the 2 s
  settle; the game's start, once per worker, is left out), the lockstep rate while driving (20/s
  at most: the game's own clock), the CPU the recorder and everything it starts used per recorded
  second, and disk per hour of footage. Run it alone (`flock -x`): it measures wall time.
world: the docs/metrics.md metrics of two `ochre demo` runs with the same settings, one on Luanti footage
  (--world luanti) and one on the synthetic world, side by side, with 95 % bootstrap intervals over
  rollouts for the PSNR metrics (from each eval's rollouts.npz); copies the Luanti dream video beside.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ochre.bench.common import header, result_path
from ochre.data.luanti.labels import MATCH_DEG, label_accuracy
from ochre.data.sources import find_recordings, load_recording
from ochre.io import atomic_path, write_json_atomic


def _ochre(*args: str) -> tuple[int, str, float, float]:
    """Run `ochre ARGS` in a child; returns (exit code, output, wall seconds, CPU seconds of it and
    everything it started and waited for)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ochre", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def _record(folder: Path, episodes: int, steps: int, size: int = 64, workers: int = 1) -> tuple[dict, float, float]:
    rc, out, wall, cpu = _ochre("record", "luanti", str(folder), "--episodes", str(episodes), "--steps", str(steps),
                                "--size", str(size), "--workers", str(workers))
    if rc != 0:
        raise RuntimeError(f"ochre record luanti failed ({rc}): {out[-2000:]}")
    return json.loads((folder / "summary.json").read_text()), wall, cpu


def _check(clips: Path) -> dict:
    rc, out, _, _ = _ochre("data", "check", str(clips), "--max-samples", "256")
    rows = [line.split() for line in out.splitlines() if line.strip()[:1] in "-0123456789"]
    table = {int(r[0]): {"yaw": float(r[1]), "pitch": float(r[2])} for r in rows if len(r) >= 3}
    peaks = {axis: max(table, key=lambda lag, axis=axis: table[lag][axis]) for axis in ("yaw", "pitch")}
    return {"exit_code": rc, "peak_lag": peaks, "correlation": table}


def _shifted_copy(src: Path, dst: Path, lines_late: int) -> None:
    """The recordings with every action line moved later (the first frames get null actions)."""
    dst.mkdir(parents=True, exist_ok=True)
    for jsonl in sorted(src.glob("luanti-*.jsonl")):
        lines = jsonl.read_text().splitlines()
        (dst / jsonl.name).write_text("\n".join(["null"] * lines_late + lines[:-lines_late]) + "\n")
        (dst / jsonl.with_suffix(".mp4").name).write_bytes(jsonl.with_suffix(".mp4").read_bytes())


def bench_labels(work: Path, episodes: int, steps: int) -> dict:
    rec_dir = work / "recordings"
    summary, wall, _ = _record(rec_dir, episodes, steps)
    within, transitions = [], 0
    for r in find_recordings(rec_dir):
        lines = [json.loads(line) for line in r.path.with_suffix(".jsonl").read_text().splitlines()]
        traj = load_recording(r, 64)                      # camera exactly as `ochre prepare` reads it
        within.append(label_accuracy(traj.camera, [line["pose"] for line in lines]) * len(traj.camera))
        transitions += len(traj.camera)
    # The recorded labels at 8 (the default), 10 and 20 frames/s, and shifted one prepared frame late
    # (2 lines at 10 frames/s, 1 at 20), which must move the peak.
    checks = {}
    for name, fps, late in (("recorded", 8, 0), ("recorded", 10, 0), ("recorded", 20, 0),
                            ("shifted_one_frame", 10, 2), ("shifted_one_frame", 20, 1)):
        src = work / f"shifted-{late}" if late else rec_dir
        if late:
            _shifted_copy(rec_dir, src, late)
        clips = work / f"clips-{name}-{fps}"
        rc, out, _, _ = _ochre("prepare", str(src), str(clips), "--fps", str(fps))
        if rc != 0:
            raise RuntimeError(f"ochre prepare failed: {out[-2000:]}")
        checks[f"{name}@{fps}fps"] = _check(clips)
    episodes_json = [json.loads(p.read_text()) for p in sorted(rec_dir.glob("*.episode.json"))]
    frame_ms = np.array([[e["frame_ms"]["p50"], e["frame_ms"]["p99"]] for e in episodes_json])
    return {
        "benchmark": "luanti-labels", **header("cpu"),
        "episodes": summary["episodes"], "frames": summary["frames"], "steps_per_episode": steps,
        "label_accuracy": {"within_deg": MATCH_DEG, "transitions": transitions,
                           "share": float(sum(within) / max(transitions, 1))},
        "game_did_as_sent": summary["did_as_sent"], "cuts": summary["cuts"], "restarts": summary["restarts"],
        "multi_step_transitions": summary["multi_step_transitions"],
        "frame_ms": {"median_of_episode_p50": float(np.median(frame_ms[:, 0])),
                     "max_of_episode_p99": float(frame_ms[:, 1].max())},
        "in_water_share": float(np.mean([e["in_water"] for e in episodes_json])),
        "data_check": checks, "recording_seconds": round(wall, 1),
    }


def bench_record(work: Path, episodes: int, steps: int, sizes: list[int], workers: list[int]) -> dict:
    rows = []
    for size in sizes:
        for w in workers:
            folder = work / f"rec-{size}-w{w}"
            summary, wall, cpu = _record(folder, episodes * w, steps, size, w)
            eps = [json.loads(p.read_text()) for p in sorted(folder.glob("*.episode.json"))]
            place = float(np.median([e["seconds"]["place"] for e in eps]))
            drive = sum(e["seconds"]["drive"] for e in eps)
            frames = summary["frames"]
            disk = sum(f.stat().st_size for f in folder.glob("luanti-*") if f.suffix in (".mp4", ".jsonl"))
            hours = frames / 20 / 3600                                    # of footage, at 20 frames/s
            rows.append({
                "size": size, "workers": w, "episodes": len(eps), "frames": frames,
                "frames_per_s": summary["frames_per_s"], "frames_per_s_per_worker": summary["frames_per_s"] / w,
                "drive_frames_per_s_per_worker": frames / drive,      # drive time summed over all workers
                "place_s_median": place, "wall_s_with_start": round(wall, 1),
                "cpu_cores_busy": round(cpu / wall, 2), "cpu_s_per_frame": round(cpu / frames, 4),
                "disk_mb_per_hour": round(disk / 1e6 / hours, 1),
                "game_did_as_sent": summary["did_as_sent"], "cuts": len(summary["cuts"]),
                "multi_step_transitions": summary["multi_step_transitions"],
                "restarts": summary["restarts"],
            })
            print(json.dumps(rows[-1]), flush=True)
    return {"benchmark": "luanti-record", **header("cpu"), "steps_per_episode": steps, "rows": rows}


ROWS = ("psnr@1", "psnr@8", "psnr@32", "delta_psnr@16", "yaw_response", "code_usage@256", "grad_ratio@256")


def bench_world(luanti: Path, synth: Path) -> dict:
    """The same demo recipe on Luanti footage and on the synthetic world, side by side."""
    out = {}
    for name, demo in (("luanti", luanti), ("synth", synth)):
        report = json.loads((demo / "report.json").read_text())
        # eval's own metrics.json carries the intervals (over rollouts, every noise seed in the mean)
        evaluated = json.loads((demo / "eval" / "metrics.json").read_text())
        out[name] = {"metrics": {**report["metrics"], **{k: v for k, v in evaluated.items() if k.endswith("/ci")}},
                     "timings_s": report["timings_s"], "recordings": json.loads((demo / "clips" / "report.json")
                                                                               .read_text())["summary"]}
    lines = ["| metric | luanti | luanti repeat frame | synth | synth repeat frame |", "|---|---|---|---|---|"]
    for r in ROWS:
        cells = []
        for name in ("luanti", "synth"):
            m = out[name]["metrics"]
            ci = m.get(f"{r}/ci")
            cells += [f"{m[r]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""),
                      f"{m[f'repeat_frame/{r}']:.3f}" if f"repeat_frame/{r}" in m else "–"]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines.append(f"| real/yaw_response | {out['luanti']['metrics']['real/yaw_response']:.3f} | | "
                 f"{out['synth']['metrics']['real/yaw_response']:.3f} | |")
    return {"benchmark": "luanti-world", **header("cpu"), **out, "table_md": "\n".join(lines)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.luanti", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    lab = sub.add_parser("labels")
    lab.add_argument("--episodes", type=int, default=16)
    lab.add_argument("--steps", type=int, default=400)
    rec = sub.add_parser("record")
    rec.add_argument("--episodes", type=int, default=4, help="per worker")
    rec.add_argument("--steps", type=int, default=400)
    rec.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    rec.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    world = sub.add_parser("world", help="the same `ochre demo` recipe on Luanti and on the synthetic world")
    world.add_argument("luanti_demo", help="`ochre demo --world luanti` output folder")
    world.add_argument("synth_demo", help="`ochre demo` output folder, same settings")
    for p in (lab, rec):
        p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    for p in (lab, rec, world):
        p.add_argument("--out", default=None, help="result JSON (default bench/results/luanti_<what>_cpu_<date>.json)")
        p.add_argument("--note", default=None, help="a line kept in the JSON (what else ran on the machine)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="ochre-luanti-bench-")) if args.what != "world" else None
    if args.what == "labels":
        result = bench_labels(work, args.episodes, args.steps)
    elif args.what == "record":
        result = bench_record(work, args.episodes, args.steps, args.sizes, args.workers)
    else:
        result = bench_world(Path(args.luanti_demo), Path(args.synth_demo))
    if args.note:
        result["note"] = args.note
    out = Path(args.out) if args.out else result_path(f"luanti_{args.what}")
    write_json_atomic(out, result)
    if args.what == "world":                  # the dreams beside the real Luanti frames
        video = out.with_name(out.name.replace("luanti_world_cpu_", "luanti_dream_")).with_suffix(".mp4")
        with atomic_path(video) as tmp:
            shutil.copyfile(Path(args.luanti_demo) / "eval" / "dream.mp4", tmp)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "data_check")}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
