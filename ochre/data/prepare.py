"""`ochre prepare`: recordings -> aligned, resampled 64x64 clip shards (docs/data.md#clip-shards-ochre-prepare-output).

Plan, then work: recordings are sorted and dealt into shards of `per_shard` recordings,
so shard j always holds the same recordings. Before any work the run's record (config and the
source set, name -> bytes) is checked against OUT/config.json (ochre.data.shards.claim_output):
a different configuration stops with what differs. Each shard is written atomically (temporary
name, then rename) followed by its manifest `clips-%06d.json`; a rerun skips every shard
whose manifest matches the plan, so an interrupted run finishes the rest and loses nothing (and deletes the
temporary file of a shard the killed run was writing).
index.json and report.json are rebuilt from the manifests at the end.
The work per recording runs on an engine (ochre.parallel: this machine's processes, or Ray tasks
with `--engine ray`); results come back in plan order and this process alone writes, so the
outputs are byte-identical whatever the engine or the number of workers.
Legend: N ticks, K kept frames, S segment length (kept frames).
"""

from __future__ import annotations

import json
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from ochre.actions import encode_window_actions, kept_ticks
from ochre.data.shards import (
    OutputMismatch,
    claim_output,
    npy_bytes,
    read_manifest,
    sources_digest,
    write_manifest,
    write_tar,
)
from ochre.data.sources import BadRecording, Recording, find_recordings, load_recording, source_bytes
from ochre.data.video import CROPS, encode_mp4
from ochre.io import remove_temporaries, write_json_atomic
from ochre.parallel import Engine, EngineError, ordered_map

SHARD_PATTERN = "clips-%06d"


@dataclass(frozen=True)
class PrepareConfig:
    fps: float = 8.0
    size: int = 64
    segment: int = 128       # kept frames per clip sample; consecutive segments share one frame
    per_shard: int = 4       # recordings per shard
    gop: int = 16            # keyframe interval of the clip mp4 (random-window decode cost)
    crf: int = 10            # near-lossless; see ochre.data.video
    crop: str = "center"     # non-square sources (VPT's 640x360): "center" square crop, or "squash"

    def __post_init__(self):
        if not 0 < self.fps <= 20:
            raise ValueError(f"fps must be in (0, 20], got {self.fps}")
        if self.segment < 2:
            raise ValueError(f"segment must be >= 2 kept frames, got {self.segment}")
        if self.size < 8 or self.per_shard < 1:
            raise ValueError("size must be >= 8 and per_shard >= 1")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {self.crop!r}")


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
    try:
        traj = load_recording(rec, cfg.size, cfg.crop)
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
        if traj.synthetic is not None:          # where a synthetic recording came from (tours use it)
            meta["synthetic"] = traj.synthetic
        samples.append({
            "__key__": sample_key(rec.name, seg),
            "mp4": encode_mp4(traj.frames[ticks[a:b]], cfg.fps, crf=cfg.crf, gop=cfg.gop),
            "actions.npy": npy_bytes(actions[a:b - 1]),
            "ticks.npy": npy_bytes(ticks[a:b]),
            "json": json.dumps(meta).encode(),
        })
    # No timings in the entry: report.json describes the data, and stays byte-identical across reruns.
    entry = {"source": rec.name, "format": rec.layout, "status": "kept", "states": len(traj.frames),
             "frames": int(len(ticks)), "samples": len(samples), "loading_frames": traj.loading}
    if traj.notes:
        entry["notes"] = traj.notes
    return samples, entry


# ---- the run -------------------------------------------------------------------------

def _worker(job):
    index, rec, cfg = job
    try:
        return index, *process_recording(rec, cfg)
    except Exception as e:  # a bug or an input nobody anticipated: report it, keep the rest
        return _skipped(job, f"unexpected error: {type(e).__name__}: {e}")


def _skipped(job, reason: str):
    """The result of a recording that could not be prepared (also: its worker died on every try)."""
    index, rec, _ = job
    return index, [], {"source": rec.name, "format": rec.layout, "status": "skipped", "reason": reason}


def _shard_done(manifest: Path, names: list[str]) -> bool:
    m = read_manifest(manifest)
    if m is None:
        return False
    tar_ok = not m.get("samples") or (manifest.with_suffix(".tar")).is_file()
    return m.get("recordings") == names and tar_ok


def run_record(recordings: list[Recording], cfg: PrepareConfig) -> dict:
    """What makes a prepared folder: the config and the source set (name -> bytes on disk)."""
    return {"kind": "clips", "config": asdict(cfg),
            "inputs": {"sources": {r.name: source_bytes(r) for r in recordings}}}


def prepare(src: str | Path, out: str | Path, cfg: PrepareConfig, workers: int | None = None,
            progress: bool = True, overwrite: bool = False, engine: Engine | None = None) -> dict:
    """Run (or finish) a prepare; returns the summary also printed by the CLI.

    `engine` says where the recordings are processed (default: a local pool of `workers`).
    Raises OutputMismatch before any work when `out` was made by another config or source set
    (unless `overwrite`, which replaces it), EngineError when the engine cannot run."""
    from tqdm import tqdm

    # Absolute: a Ray worker on another node (or in another working directory) opens the same files.
    src, out = Path(src).resolve(), Path(out)
    recordings = find_recordings(src)
    if not recordings:
        return {"recordings": 0}
    record = run_record(recordings, cfg)
    claim_output(out, record, overwrite=overwrite, what="clip shards")
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(shard_dir)               # a shard a killed run was writing
    plan = [recordings[i:i + cfg.per_shard] for i in range(0, len(recordings), cfg.per_shard)]
    todo = [j for j, recs in enumerate(plan)
            if not _shard_done(shard_dir / f"{SHARD_PATTERN % j}.json", [r.name for r in recs])]
    jobs = [(j, rec, cfg) for j in todo for rec in plan[j]]
    pending = {j: len(plan[j]) for j in todo}
    results: dict[int, list] = {j: [] for j in todo}
    t0, states_done = time.perf_counter(), 0
    engine = engine or Engine(workers=workers)
    # One process (or task) per core: decoding and x264 encoding are single-threaded per recording.
    with ordered_map(engine, len(jobs), crashed=_skipped) if jobs else nullcontext(map) as mapper:
        bar = tqdm(total=len(jobs), unit="rec", desc=f"prepare ({engine.name})", disable=not progress,
                   file=sys.stderr)
        for j, samples, entry in mapper(_worker, jobs):
            results[j].append((samples, entry))
            states_done += entry.get("states", 0)
            pending[j] -= 1
            bar.update()
            bar.set_postfix(shards=f"{len(todo) - sum(1 for v in pending.values() if v)}/{len(todo)}")
            if pending[j] == 0:
                _finish_shard(shard_dir, j, plan[j], results.pop(j), cfg)
        bar.close()
    summary = _write_index(out, plan, cfg, sources_digest(record["inputs"]["sources"]))
    summary.update(shards_written=len(todo), seconds=round(time.perf_counter() - t0, 2),
                   states_processed=states_done)
    return summary


def _finish_shard(shard_dir: Path, j: int, recs: list[Recording], results, cfg: PrepareConfig) -> None:
    order = {r.name: i for i, r in enumerate(recs)}
    results.sort(key=lambda se: order[se[1]["source"]])
    samples = [s for ss, _ in results for s in ss]
    name = SHARD_PATTERN % j
    if samples:
        write_tar(shard_dir / f"{name}.tar", samples)
    manifest = {
        "recordings": [r.name for r in recs],
        "config": asdict(cfg),
        "samples": [{"key": s["__key__"], "frames": json.loads(s["json"])["frames"],
                     "source": json.loads(s["json"])["source"]} for s in samples],
        "entries": [e for _, e in results],
    }
    write_manifest(shard_dir / f"{name}.json", manifest)


def _write_index(out: Path, plan, cfg: PrepareConfig, sources: str) -> dict:
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
    index = {"version": 1, "kind": "clips", "fps": cfg.fps, "size": cfg.size, "config": asdict(cfg),
             "sources_digest": sources, "shards": shards,
             "num_samples": summary["samples"], "num_frames": summary["frames"]}
    write_json_atomic(out / "index.json", index)
    write_json_atomic(out / "report.json", {"summary": summary, "skipped": skipped,
                                            "recordings": report})
    return summary


def run(args) -> int:
    cfg = PrepareConfig(fps=args.fps, size=args.size, segment=args.segment, per_shard=args.per_shard,
                        crop=args.crop)
    try:
        engine = Engine(args.engine, args.workers, args.address)
        s = prepare(args.src, args.out, cfg, overwrite=args.overwrite, engine=engine)
    except (FileNotFoundError, OutputMismatch, EngineError) as e:
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
