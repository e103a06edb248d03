"""`ochre tokenize`: clip shards -> token shards (DESIGN §3.4) with a trained tokenizer.

Token shard j holds exactly the samples of clip shard j, with `tokens.npy` uint16 (K, 16, 16)
in place of the mp4 and the tokenizer's hash in the json. Shards are written atomically, each
followed by its manifest. OUT/config.json records the inputs (the clip shards' index digest and
the tokenizer's hash): a rerun with the same inputs skips finished shards, one with other clips
or another tokenizer is refused before any work (--overwrite replaces the folder).
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
from ochre.io import write_json_atomic
from ochre.train.checkpoint import CheckpointError, checkpoint_hash, load_tokenizer, read_checkpoint_config


def resolve_checkpoint(path) -> Path:
    """A checkpoint folder, or a run folder (its newest checkpoint)."""
    return Path(read_checkpoint_config(path)["path"])


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


def tokenize(clips, tokenizer, out, batch: int = 256, device: str | None = None, progress: bool = True,
             overwrite: bool = False) -> dict:
    from tqdm import tqdm

    clips, out = Path(clips), Path(out)
    index = read_index(clips)
    ckpt = resolve_checkpoint(tokenizer)
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
        "clips": str(clips.resolve()),
        "tokenizer_checkpoint": str(ckpt), "codebook_size": model.config.codebook_size, "shards": shards})
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
