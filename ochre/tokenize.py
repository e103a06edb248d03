"""`ochre tokenize`: clip shards -> token shards (docs/data.md#token-shards-ochre-tokenize-output) with a trained
tokenizer.

Token shard j holds exactly the samples of clip shard j, with `tokens.npy` uint16 (K, 16, 16)
in place of the mp4 and the tokenizer's hash in the json. Shards are written atomically, each
followed by its manifest. OUT/config.json records the inputs (the clip shards' index digest and
the tokenizer's hash): a rerun with the same inputs skips finished shards, one with other clips
or another tokenizer is refused before any work (--overwrite replaces the folder). The index
records the clip shards and the tokenizer as paths relative to OUT, and the image shift per unit of
yaw and pitch measured on the train clips, which the world model's motion prior needs.
"""

from __future__ import annotations

import json
import sys
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


@torch.no_grad()
def tokenize_shard(model, samples, tok_hash: str, batch: int, device, bar) -> list[dict]:
    out = []
    for sample in samples:
        frames = torch.from_numpy(decode_frames(sample["mp4"])).permute(0, 3, 1, 2)   # (K, 3, H, W)
        codes = torch.cat([model.encode(frames[i:i + batch].to(device)).cpu()
                           for i in range(0, len(frames), batch)])                 # (K, h, w)
        meta = json.loads(sample["json"])
        meta.update(tokenizer=tok_hash, grid=list(codes.shape[1:]))
        out.append({"__key__": sample["__key__"], "tokens.npy": npy_bytes(codes.numpy().astype(np.uint16)),
                    "actions.npy": sample["actions.npy"], "ticks.npy": sample["ticks.npy"],
                    "json": json.dumps(meta).encode()})
        bar.update(len(frames))
    return out


def shift_per_unit(clips, max_samples: int = 32) -> dict:
    """{"yaw": px, "pitch": px}: the image shift one unit of each causes, measured on the train clips
    (ochre.data.check.content_shift); None for an axis the clips never move purely enough to measure."""
    from ochre.data.check import content_shift, measure

    try:
        px = content_shift(*measure(clips, max_samples, split="train"))
    except ValueError:                                  # no train clips: nothing to measure
        return {"yaw": None, "pitch": None}
    return {name: px[f"{name}_px_per_unit"] for name in ("yaw", "pitch")}


def tokenize(clips, tokenizer, out, batch: int = 256, device: str | None = None, progress: bool = True,
             overwrite: bool = False) -> dict:
    from tqdm import tqdm

    clips, out = Path(clips), Path(out)
    index = read_index(clips)
    ckpt = resolve(tokenizer)
    tok_hash = checkpoint_hash(ckpt)
    claim_output(out, {"kind": "tokens", "config": {},
                       "inputs": {"clips": index_digest(clips), "tokenizer": tok_hash}},
                 overwrite=overwrite, what="token shards")
    device = pick_device(device)
    model = load_tokenizer(ckpt, device).eval()
    if model.config.codebook_size > 65536:
        raise ValueError("codebook larger than uint16 token shards can hold")
    total = sum(s["frames"] for shard in index["shards"] for s in shard["samples"])
    bar = tqdm(total=total, unit="frame", desc="tokenize", disable=not progress, file=sys.stderr)
    shards = []
    for shard in index["shards"]:
        name = Path(shard["file"]).name
        manifest = out / "shards" / (Path(name).stem + ".json")
        if (read_manifest(manifest) or {}).get("tokenizer") == tok_hash:
            bar.update(sum(s["frames"] for s in shard["samples"]))
        else:
            clip_samples = tar_samples([str(clips / shard["file"])])
            samples = tokenize_shard(model, clip_samples, tok_hash, batch, device, bar)
            write_tar(out / "shards" / name, samples)
            write_manifest(manifest, {"tokenizer": tok_hash, "samples": shard["samples"]})
        shards.append({"file": f"shards/{name}", "samples": shard["samples"]})
    bar.close()
    write_json_atomic(out / "index.json", {
        **{k: v for k, v in index.items() if k != "shards"}, "kind": "tokens", "tokenizer": tok_hash,
        "clips": record_path(clips, out), "tokenizer_checkpoint": record_path(ckpt, out),
        "codebook_size": model.config.codebook_size, "shift_per_unit": shift_per_unit(clips), "shards": shards})
    return {"samples": index["num_samples"], "frames": total, "tokenizer": tok_hash}


def run(args) -> int:
    try:
        s = tokenize(args.clips, args.tokenizer, args.out, batch=args.batch, device=args.device,
                     overwrite=args.overwrite)
    except (FileNotFoundError, ValueError, CheckpointError) as e:     # ValueError: OutputMismatch too
        print(f"ochre tokenize: {e}", file=sys.stderr)
        return 2
    print(f"tokenized {s['frames']} frames in {s['samples']} clips with tokenizer {s['tokenizer']} -> {args.out}")
    return 0
