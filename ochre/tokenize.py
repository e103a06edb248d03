"""`ochre tokenize`: clip shards -> token shards (docs/data.md#token-shards-ochre-tokenize-output) with a trained
tokenizer.

Token shard j holds exactly the samples of clip shard j, with `tokens.npy` uint16 (K, 16, 16)
in place of the mp4 and the tokenizer's hash in the json. Shards are written atomically, each
followed by its manifest. OUT/config.json records the inputs (the clip shards' index digest and
the tokenizer's hash): a rerun with the same inputs skips finished shards, one with other clips
or another tokenizer is refused before any work (--overwrite replaces the folder). The index
records the clip shards and the tokenizer as paths relative to OUT, and the image shift per unit of
yaw and pitch measured on the train clips, which the world model's motion prior needs.
Each clip shard is one job (`tokenize_shard`), run in this process or as a Ray task (`--engine ray`);
this process alone writes, in shard order, so the token shards are the same bytes either way.
"""

from __future__ import annotations

import functools
import json
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ochre.data.shards import (
    claim_output,
    index_digest,
    npy_bytes,
    read_index,
    read_manifest,
    tar_samples,
    write_manifest,
    write_tar,
)
from ochre.data.video import decode_frames
from ochre.device import pick_device
from ochre.io import record_path, write_json_atomic
from ochre.models.checkpoint import CheckpointError, checkpoint_hash, load_tokenizer, resolve
from ochre.parallel import Engine, EngineError, ordered_map


@functools.lru_cache(maxsize=1)
def _model(ckpt: str, device: str | None):
    """The tokenizer, loaded once per process (a Ray worker runs many shards with one load)."""
    dev = pick_device(device)
    return load_tokenizer(ckpt, dev).eval(), dev


@torch.no_grad()
def tokenize_shard(job: tuple) -> list[dict]:
    """(clip shard path, checkpoint, its hash, frames per forward, device) -> the token shard's samples.

    A pure function of the job (the batches cut within each clip, as on every engine), so a
    retried task and a local run make the same bytes."""
    url, ckpt, tok_hash, batch, device = job
    model, dev = _model(ckpt, device)
    out = []
    for sample in tar_samples([url]):
        frames = torch.from_numpy(decode_frames(sample["mp4"])).permute(0, 3, 1, 2)   # (K, 3, H, W)
        codes = torch.cat([model.encode(frames[i:i + batch].to(dev)).cpu()
                           for i in range(0, len(frames), batch)])                 # (K, h, w)
        meta = json.loads(sample["json"])
        meta.update(tokenizer=tok_hash, grid=list(codes.shape[1:]))
        out.append({"__key__": sample["__key__"], "tokens.npy": npy_bytes(codes.numpy().astype(np.uint16)),
                    "actions.npy": sample["actions.npy"], "ticks.npy": sample["ticks.npy"],
                    "json": json.dumps(meta).encode()})
    return out


MOTIONS = ("yaw", "pitch", "strafe", "zoom")


def shift_per_unit(clips, max_samples: int = 32) -> dict:
    """{"yaw", "pitch", "strafe": picture shift in pixels per unit action, "zoom": log zoom per unit of
    walking forward}, measured on the train clips (ochre.data.check.content_shift); None for a motion
    the clips never make alone often enough to measure."""
    from ochre.data.check import content_shift, measure

    try:
        found = content_shift(*measure(clips, max_samples, split="train", zoom=True))
    except ValueError:                                  # no train clips: nothing to measure
        return dict.fromkeys(MOTIONS)
    return {"yaw": found["yaw_px_per_unit"], "pitch": found["pitch_px_per_unit"],
            "strafe": found["strafe_px_per_unit"], "zoom": found["walk_zoom_per_unit"]}


def tokenize(clips, tokenizer, out, batch: int = 256, device: str | None = None, progress: bool = True,
             overwrite: bool = False, engine: Engine | None = None) -> dict:
    """Token shards of every clip shard not yet done (`engine`: where; default this process)."""
    from tqdm import tqdm

    clips, out = Path(clips), Path(out)
    index = read_index(clips)
    ckpt = resolve(tokenizer)
    tok_hash = checkpoint_hash(ckpt)
    claim_output(out, {"kind": "tokens", "config": {},
                       "inputs": {"clips": index_digest(clips), "tokenizer": tok_hash}},
                 overwrite=overwrite, what="token shards")
    engine = engine or Engine(workers=1)
    # Loaded here first, so that a corrupt checkpoint stops the run before any task (local: the one load).
    model, _ = _model(str(ckpt.resolve()), device if engine.name == "local" else "cpu")
    codebook = model.config.codebook_size
    if codebook > 65536:
        raise ValueError("codebook larger than uint16 token shards can hold")
    (out / "shards").mkdir(parents=True, exist_ok=True)
    frames = [sum(s["frames"] for s in shard["samples"]) for shard in index["shards"]]
    todo = [j for j, shard in enumerate(index["shards"])
            if (read_manifest(_manifest(out, shard)) or {}).get("tokenizer") != tok_hash]
    # Absolute paths: a Ray worker on another node (or in another working directory) opens the same files.
    jobs = [(str(clips.resolve() / index["shards"][j]["file"]), str(ckpt.resolve()), tok_hash, batch, device)
            for j in todo]
    # Local: this one process, every core for torch. Ray: one task per shard, a GPU each with --device cuda.
    gpus = 1.0 if engine.name == "ray" and (device or "").startswith("cuda") else 0.0
    with ordered_map(engine, len(jobs), gpus=gpus) if jobs else nullcontext(map) as mapper:
        bar = tqdm(total=sum(frames), initial=sum(frames) - sum(frames[j] for j in todo), unit="frame",
                   desc=f"tokenize ({engine.name})", disable=not progress, file=sys.stderr)
        for j, samples in zip(todo, mapper(tokenize_shard, jobs)):
            shard = index["shards"][j]
            write_tar(out / "shards" / Path(shard["file"]).name, samples)
            write_manifest(_manifest(out, shard), {"tokenizer": tok_hash, "samples": shard["samples"]})
            bar.update(frames[j])
        bar.close()
    shards = [{"file": f"shards/{Path(shard['file']).name}", "samples": shard["samples"]} for shard in index["shards"]]
    write_json_atomic(out / "index.json", {
        **{k: v for k, v in index.items() if k != "shards"}, "kind": "tokens", "tokenizer": tok_hash,
        "clips": record_path(clips, out), "tokenizer_checkpoint": record_path(ckpt, out),
        "codebook_size": codebook, "shift_per_unit": shift_per_unit(clips), "shards": shards})
    return {"samples": index["num_samples"], "frames": sum(frames), "tokenizer": tok_hash}


def _manifest(out: Path, shard: dict) -> Path:
    return out / "shards" / (Path(shard["file"]).stem + ".json")


def run(args) -> int:
    try:
        s = tokenize(args.clips, args.tokenizer, args.out, batch=args.batch, device=args.device,
                     overwrite=args.overwrite, engine=Engine(args.engine, args.workers if args.engine == "ray" else 1,
                                                             args.address))
    except (FileNotFoundError, ValueError, CheckpointError, EngineError) as e:   # ValueError: OutputMismatch too
        print(f"ochre tokenize: {e}", file=sys.stderr)
        return 2
    print(f"tokenized {s['frames']} frames in {s['samples']} clips with tokenizer {s['tokenizer']} -> {args.out}")
    return 0
