"""`ochre prepare`: recordings -> aligned, resampled 64x64 clip shards (DESIGN §3.3).

Plan, then work: recordings are sorted and dealt into shards of `per_shard` recordings,
so shard j always holds the same recordings. Each shard is written atomically (temporary
name, then rename) followed by its manifest `clips-%06d.json`; a rerun skips every shard
whose manifest matches the plan, so an interrupted run finishes the rest and loses nothing.
index.json and report.json are rebuilt from the manifests at the end.
Legend: N ticks, K kept frames, S segment length (kept frames).
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import re
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ochre.actions import encode_window_actions, kept_ticks
from ochre.data.sources import BadRecording, Recording, find_recordings, load_recording
from ochre.data.video import encode_mp4
from ochre.io import atomic_path, write_json_atomic

SHARD_PATTERN = "clips-%06d"


@dataclass(frozen=True)
class PrepareConfig:
    fps: float = 8.0
    size: int = 64
    segment: int = 128       # kept frames per clip sample; consecutive segments share one frame
    per_shard: int = 4       # recordings per shard
    gop: int = 16            # keyframe interval of the clip mp4 (random-window decode cost)
    crf: int = 10            # near-lossless; see ochre.data.video

    def __post_init__(self):
        if not 0 < self.fps <= 20:
            raise ValueError(f"fps must be in (0, 20], got {self.fps}")
        if self.segment < 2:
            raise ValueError(f"segment must be >= 2 kept frames, got {self.segment}")
        if self.size < 8 or self.per_shard < 1:
            raise ValueError("size must be >= 8 and per_shard >= 1")


def sample_key(name: str, segment: int) -> str:
    # webdataset splits the key from the extension at the first dot of the file name.
    return re.sub(r"[^A-Za-z0-9_\-/]", "_", name).strip("/") + f"/{segment:04d}"


def segment_bounds(k: int, segment: int) -> list[tuple[int, int]]:
    """[start, stop) over K kept frames; neighbours share one frame so no transition is lost."""
    bounds, start = [], 0
    while start < k - 1:
        stop = min(start + segment, k)
        bounds.append((start, stop))
        start = stop - 1
    return bounds


def process_recording(rec: Recording, cfg: PrepareConfig) -> tuple[list[dict], dict]:
    """One recording -> (webdataset samples, report entry). Never raises on bad input."""
    t0 = time.perf_counter()
    try:
        traj = load_recording(rec, cfg.size)
    except BadRecording as e:
        return [], {"source": rec.name, "format": rec.layout, "status": "skipped", "reason": str(e)}
    ticks = kept_ticks(len(traj.frames), cfg.fps)                           # (K,)
    if len(ticks) < 2:
        return [], {"source": rec.name, "format": rec.layout, "status": "skipped",
                    "reason": f"too short: {len(traj.frames)} states give {len(ticks)} frame at {cfg.fps} fps"}
    actions = encode_window_actions(traj.camera, traj.move_x, traj.move_z, ticks)   # (K-1, 4)
    samples = []
    for seg, (a, b) in enumerate(segment_bounds(len(ticks), cfg.segment)):
        meta = {"source": rec.name, "format": rec.layout, "fps": cfg.fps, "size": cfg.size,
                "frames": b - a, "segment": seg, "loading_frames": traj.loading}
        samples.append({
            "__key__": sample_key(rec.name, seg),
            "mp4": encode_mp4(traj.frames[ticks[a:b]], cfg.fps, crf=cfg.crf, gop=cfg.gop),
            "actions.npy": npy_bytes(actions[a:b - 1]),
            "ticks.npy": npy_bytes(ticks[a:b]),
            "json": json.dumps(meta).encode(),
        })
    entry = {"source": rec.name, "format": rec.layout, "status": "kept", "states": len(traj.frames),
             "frames": int(len(ticks)), "samples": len(samples), "loading_frames": traj.loading,
             "seconds": round(time.perf_counter() - t0, 3)}
    if traj.notes:
        entry["notes"] = traj.notes
    return samples, entry


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickle), the encoding of every array in a shard."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_tar(path: Path, samples: list[dict]) -> None:
    """Write webdataset samples to a tar atomically; fixed mtimes keep reruns byte-identical."""
    with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))


# ---- the run -------------------------------------------------------------------------

def _worker(job):
    index, rec, cfg = job
    try:
        return index, *process_recording(rec, cfg)
    except Exception as e:  # a bug or an input nobody anticipated: report it, keep the rest
        return index, [], {"source": rec.name, "format": rec.layout, "status": "skipped",
                           "reason": f"unexpected error: {type(e).__name__}: {e}"}


def _shard_done(manifest: Path, names: list[str]) -> bool:
    try:
        m = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    tar_ok = not m.get("samples") or (manifest.with_suffix(".tar")).is_file()
    return m.get("recordings") == names and tar_ok


def prepare(src: str | Path, out: str | Path, cfg: PrepareConfig, workers: int | None = None,
            progress: bool = True) -> dict:
    """Run (or finish) a prepare; returns the summary also printed by the CLI."""
    from tqdm import tqdm

    src, out = Path(src), Path(out)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    recordings = find_recordings(src)
    plan = [recordings[i:i + cfg.per_shard] for i in range(0, len(recordings), cfg.per_shard)]
    todo = [j for j, recs in enumerate(plan)
            if not _shard_done(shard_dir / f"{SHARD_PATTERN % j}.json", [r.name for r in recs])]
    jobs = [(j, rec, cfg) for j in todo for rec in plan[j]]
    pending = {j: len(plan[j]) for j in todo}
    results: dict[int, list] = {j: [] for j in todo}
    t0, states_done = time.perf_counter(), 0
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    bar = tqdm(total=len(jobs), unit="rec", desc="prepare", disable=not progress, file=sys.stderr)
    with _pool(workers) as pool:
        for j, samples, entry in pool.imap(_worker, jobs) if pool else map(_worker, jobs):
            results[j].append((samples, entry))
            states_done += entry.get("states", 0)
            pending[j] -= 1
            bar.update()
            bar.set_postfix(shards=f"{len(todo) - sum(1 for v in pending.values() if v)}/{len(todo)}")
            if pending[j] == 0:
                _finish_shard(shard_dir, j, plan[j], results.pop(j), cfg)
    bar.close()
    summary = _write_index(out, plan, cfg)
    summary.update(shards_written=len(todo), seconds=round(time.perf_counter() - t0, 2),
                   states_processed=states_done)
    return summary


class _NoPool:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _pool(workers: int):
    # One process per core: decoding and x264 encoding are single-threaded per recording.
    if workers == 1:
        return _NoPool()
    return mp.get_context("spawn").Pool(workers)


def _finish_shard(shard_dir: Path, j: int, recs: list[Recording], results, cfg: PrepareConfig) -> None:
    order = {r.name: i for i, r in enumerate(recs)}
    results.sort(key=lambda se: order[se[1]["source"]])
    samples = [s for ss, _ in results for s in ss]
    name = SHARD_PATTERN % j
    if samples:
        write_tar(shard_dir / f"{name}.tar", samples)
    manifest = {
        "recordings": [r.name for r in recs],
        "config": {"fps": cfg.fps, "size": cfg.size, "segment": cfg.segment},
        "samples": [{"key": s["__key__"], "frames": json.loads(s["json"])["frames"],
                     "source": json.loads(s["json"])["source"]} for s in samples],
        "entries": [e for _, e in results],
    }
    write_json_atomic(shard_dir / f"{name}.json", manifest)   # written last: marks the shard done


def _write_index(out: Path, plan, cfg: PrepareConfig) -> dict:
    shards, report = [], []
    for j in range(len(plan)):
        m = json.loads((out / "shards" / f"{SHARD_PATTERN % j}.json").read_text())
        if m["samples"]:
            shards.append({"file": f"shards/{SHARD_PATTERN % j}.tar", "samples": m["samples"]})
        for e in m["entries"]:
            report.append(e)
    skipped = [e for e in report if e["status"] == "skipped"]
    summary = {
        "recordings": len(report), "kept": len(report) - len(skipped), "skipped": len(skipped),
        "samples": sum(len(s["samples"]) for s in shards),
        "frames": sum(x["frames"] for s in shards for x in s["samples"]),
        "shards": len(shards),
    }
    index = {"version": 1, "kind": "clips", "fps": cfg.fps, "size": cfg.size, "shards": shards,
             "num_samples": summary["samples"], "num_frames": summary["frames"]}
    write_json_atomic(out / "index.json", index)
    write_json_atomic(out / "report.json", {"summary": summary, "skipped": skipped,
                                            "recordings": report})
    return summary


def run(args) -> int:
    cfg = PrepareConfig(fps=args.fps, size=args.size, segment=args.segment, per_shard=args.per_shard)
    try:
        s = prepare(args.src, args.out, cfg, workers=args.workers)
    except FileNotFoundError as e:
        print(f"ochre prepare: {e}", file=sys.stderr)
        return 2
    if s["recordings"] == 0:
        print(f"ochre prepare: no MineRL or VPT recordings found under {args.src}", file=sys.stderr)
        return 1
    rate = s["states_processed"] / max(s["seconds"], 1e-9)
    print(f"prepared {s['kept']}/{s['recordings']} recordings -> {s['samples']} clips, {s['frames']} "
          f"frames in {s['shards']} shards; skipped {s['skipped']} (reasons in {args.out}/report.json)")
    if s["shards_written"]:
        print(f"{s['states_processed']} source frames in {s['seconds']:.1f} s = {rate:.0f} source frames/s")
    else:
        print("nothing to do: every shard was already complete")
    return 0
