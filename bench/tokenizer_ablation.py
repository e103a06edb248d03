"""Tokenizer variants trained alike on the same clips, scored on held-out frames: which preset and
loss the shipped model's tokenizer uses, and why.

    python -m ochre.bench.tokenizer_ablation CLIPS --work DIR [--steps 1200] [--variants tiny small ...]

Every variant trains `--steps` steps at batch 32 from the same seed on the train split and is scored
on test frames (recon_psnr, recon_grad_ratio, codebook usage) with its training speed. Writes
bench/results/tokenizer_ablation_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ochre.bench.common import data_record, header, result_path
from ochre.io import write_json_atomic

VARIANTS = {
    "tiny": ("tiny", {}),                              # the demo's tokenizer
    "tiny+edges": ("tiny", {"grad_weight": 0.5}),
    "tiny+edges+d64": ("tiny", {"grad_weight": 0.5, "code_dim": 64}),
    "small": ("small", {"grad_weight": 0.0}),
    "small+edges": ("small", {}),                      # the small preset has the edge term
}


def main(argv=None) -> int:
    from ochre.models.tokenizer import TokenizerConfig, TokenizerTrainConfig
    from ochre.train.tokenizer import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", help="clip shards (`ochre prepare` output)")
    ap.add_argument("--work", required=True, help="folder for the variants' runs (resumed if present)")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--out", default=None,
                    help="result JSON (default bench/results/tokenizer_ablation_cpu_<date>.json)")
    args = ap.parse_args(argv)
    rows = []
    for name in args.variants:
        preset, overrides = VARIANTS[name]
        run = Path(args.work) / name
        t0 = time.perf_counter()
        metrics = train(args.clips, run, TokenizerConfig.preset(preset, **overrides),
                        TokenizerTrainConfig(steps=args.steps, batch=32, warmup=min(100, args.steps // 10)),
                        resume=True, progress=True)
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        speed = sorted(r["frames_per_s"] for r in log)[len(log) // 2]
        rows.append({"variant": name, "preset": preset, "overrides": overrides, "steps": args.steps,
                     "train_frames_per_s": speed, "seconds": round(time.perf_counter() - t0, 1), **metrics})
        print(f"{name}: recon_psnr {metrics['recon_psnr']:.2f} dB, grad ratio {metrics['recon_grad_ratio']:.3f}, "
              f"usage {metrics['codebook_usage']:.2f}, {speed:.0f} frames/s", file=sys.stderr)
    out = Path(args.out) if args.out else result_path("tokenizer_ablation")
    write_json_atomic(out, {**header("cpu"), "clips": data_record(args.clips), "split": "test", "batch": 32,
                            "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
