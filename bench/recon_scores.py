"""Tokenizers scored on the same frames: how sharp and how faithful each one's reconstructions are.

    python -m ochre.bench.recon_scores CLIPS TOK [TOK ...] [--split val] [--frames 512] [--out JSON]

For each tokenizer (a run or checkpoint folder) every frame of the split's spread sample
(ochre.data.loader.eval_frames: the same frames for every tokenizer) is encoded and decoded;
recon_psnr and recon_grad_ratio (ochre.train.tokenizer.frame_scores) come with 95 % bootstrap
intervals over frames, and whether each tokenizer makes the same codes as the first. Choosing a
decoder reads --split val; test is read once, after the choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ochre.bench.common import distinct_names, write_or_print


def score(clips, tokenizers: list, split: str = "val", frames_n: int = 512) -> dict:
    """{folder name: recon scores, "same_codes_as_first"} for each tokenizer, on one set of frames."""
    import torch

    from ochre.data.loader import eval_frames
    from ochre.eval.intervals import interval, mean_interval, put
    from ochre.models.checkpoint import load_tokenizer
    from ochre.train.tokenizer import frame_scores, reconstruct

    frames = eval_frames(clips, frames_n, split=split)
    out, first = {}, None
    for tok in tokenizers:
        codes, recon = reconstruct(load_tokenizer(tok), frames)
        first = codes if first is None else first
        psnr, fake, real = frame_scores(frames, recon)
        row: dict = {}
        put(row, "recon_psnr", mean_interval(psnr))
        put(row, "recon_grad_ratio", interval(lambda idx, f=fake, r=real: f[idx].sum() / r[idx].sum(), len(frames)))
        out[Path(tok).name] = {**row, "frames": len(frames), "same_codes_as_first": bool(torch.equal(codes, first))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", help="clip shards (`ochre prepare` output)")
    ap.add_argument("tokenizers", nargs="+", help="tokenizer run or checkpoint folders (names must differ)")
    ap.add_argument("--split", default="val", choices=("train", "val", "test", "all"))
    ap.add_argument("--frames", type=int, default=512, help="frames spread over the split (default 512)")
    ap.add_argument("--out", default=None, help="write the scores here as JSON (default: print only)")
    args = ap.parse_args(argv)
    if not distinct_names("recon_scores", args.tokenizers):
        return 2
    result = {"split": args.split, "scores": score(args.clips, args.tokenizers, args.split, args.frames)}
    for name, s in result["scores"].items():
        print(f"{name:>24}  recon_psnr {s['recon_psnr']:.2f} [{s['recon_psnr/ci'][0]:.2f}, "
              f"{s['recon_psnr/ci'][1]:.2f}]  grad_ratio {s['recon_grad_ratio']:.3f} "
              f"[{s['recon_grad_ratio/ci'][0]:.3f}, {s['recon_grad_ratio/ci'][1]:.3f}]"
              f"{'' if s['same_codes_as_first'] else '  (other codes)'}")
    write_or_print(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
