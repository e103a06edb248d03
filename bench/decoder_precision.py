"""How far a decoder's frames move with the precision it runs in: the same code grids decoded in
fp64 (the reference), fp32, bf16 eager torch and, with --package, a bf16 AOTInductor decode package.

    python -m ochre.bench.decoder_precision TOK [TOK ...] --bank BANK [--grids 64] [--batch 8] [--package]
                                            [--out JSON]

The grids are drawn (seeded) from a dream bank (`python -m ochre.bench.dream_decoder bank`: the
world model's own dreamed codes, what a live decoder is fed) and decoded with a zero view, through
the graphs every deploy path uses (ochre.export.graph.DecodeGraph, ochre.models.precision). For each
precision: the largest, 99.9th-percentile and mean distance of its uint8 frames to the fp64 decode
(levels of 255) and the PSNR against it; with --package also the package's distance to eager bf16,
the quantity the AOTInductor parity check bounded before it was referenced to fp64 (export/aoti.py).
A decoder's gain sets how far bf16's roundings move its pixels, which is why that check reads each
package against eager torch's own distance, measured on the spot.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from ochre.bench.common import distinct_names, write_or_print


def _distances(frames, ref) -> dict:
    import torch

    d = (frames - ref).abs().float()
    mse = float((d ** 2).mean())
    return {"max": int(d.max()), "p999": float(torch.quantile(d.flatten()[:: max(1, d.numel() // 1_000_000)], 0.999)),
            "mean": float(d.mean()), "psnr": 10 * float(np.log10(255 ** 2 / mse)) if mse > 0 else float("inf")}


def measure(tokenizer, grids: np.ndarray, batch: int = 8, package: bool = False) -> dict:
    """grids int (N, h, w) with N a multiple of batch -> {precision: distances to the fp64 decode}."""
    import torch

    from ochre.export.aoti import compile_package, exact_decode
    from ochre.export.graph import DecodeGraph
    from ochre.models.checkpoint import load_tokenizer

    if len(grids) % batch:
        raise ValueError(f"{len(grids)} grids do not split into batches of {batch}")
    tok = load_tokenizer(tokenizer, impl="torch").eval()
    codes = torch.from_numpy(grids.astype(np.int64))
    view = torch.zeros(batch, 3)
    graphs = {"fp64": exact_decode(tok), "fp32": DecodeGraph(tok, torch.float32).eval(),
              "bf16": DecodeGraph(tok, torch.bfloat16).eval()}
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        if package:
            path = Path(tmp) / "decode.pt2"
            compile_package(graphs["bf16"], (codes[:batch], view), path)
            graphs["package_bf16"] = torch._inductor.aoti_load_package(str(path))
        frames = {name: torch.cat([g(codes[i:i + batch], view) for i in range(0, len(codes), batch)]).int()
                  for name, g in graphs.items()}
    out = {name: _distances(f, frames["fp64"]) for name, f in frames.items() if name != "fp64"}
    if package:
        out["package_bf16_vs_eager_bf16"] = _distances(frames["package_bf16"], frames["bf16"])
    return out


def draw(bank, n: int, tokenizer, seed: int = 0) -> np.ndarray:
    """n distinct grids drawn from a dream bank's codes (seeded), checked against the tokenizer's codebook."""
    from ochre.models.checkpoint import load_tokenizer
    from ochre.train.tokenizer import read_dream_bank

    codes = read_dream_bank(bank, load_tokenizer(tokenizer).config).numpy()
    if n > len(codes):
        raise ValueError(f"{bank}: holds {len(codes)} grids, fewer than the {n} asked")
    return codes[np.random.default_rng(seed).choice(len(codes), n, replace=False)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokenizers", nargs="+", help="tokenizer run or checkpoint folders (names must differ)")
    ap.add_argument("--bank", required=True, help="dream bank .npz (python -m ochre.bench.dream_decoder bank)")
    ap.add_argument("--grids", type=int, default=64, help="grids drawn from the bank (default 64)")
    ap.add_argument("--batch", type=int, default=8, help="grids per decode call, as players (default 8)")
    ap.add_argument("--package", action="store_true", help="also compile and read a bf16 AOTInductor decode package")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results here as JSON (default: print only)")
    args = ap.parse_args(argv)
    if not distinct_names("decoder_precision", args.tokenizers):
        return 2
    try:
        grids = draw(args.bank, args.grids, args.tokenizers[0], args.seed)
    except ValueError as e:
        print(f"decoder_precision: {e}", file=sys.stderr)
        return 2
    result = {"bank": str(args.bank), "grids": args.grids, "batch": args.batch, "seed": args.seed,
              "levels_from_fp64": {Path(t).name: measure(t, grids, args.batch, args.package) for t in args.tokenizers}}
    for name, rows in result["levels_from_fp64"].items():
        print(name + ": " + "; ".join(f"{p} max {r['max']} mean {r['mean']:.3f} psnr {r['psnr']:.1f}"
                                      for p, r in rows.items()))
    write_or_print(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
