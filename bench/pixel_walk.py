"""A probe of the copy prior's walking zoom done on pictures instead of whole codes (eval only).

    python -m ochre.bench.pixel_walk RUN TOKENS --out DIR [--mode bilinear|nearest] [--split val] [EVAL FLAGS]

The world model's copy prior carries a step forward's zoom in its view state until the edge codes would
move by a whole token, then resamples the codes about the centre (ochre.models.dynamics: `_copy_codes`):
for ~7 steps of walking its proposals are the codes it had, and bench/walk_ceiling says a zoom of the
picture would buy more (on val, +0.65 dB over holding the frame at step 4, through the tokenizer, against
+0.21 for whole codes). Here, while walking, the proposals come from the current codes decoded, zoomed by
the whole zoom owed (`--mode`: bilinear or nearest pixels, border repeated), encoded again, then shifted
as before; no zoom is left owed to the codes. The network, its gate and the decoding are unchanged (the
gate was trained on the other proposals). Runs `ochre eval RUN TOKENS --out DIR` with the patch in place;
EVAL FLAGS are passed on (e.g. --rollouts 100 --long-rollouts 48 --seeds 0 1 --tours 64 --no-learned).
bench/results/pixel_walk_probe_cpu_2026-12-05.json.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch
import torch.nn.functional as F

from ochre.models.dynamics import Dynamics


def zoom_pictures(frames: torch.Tensor, factors: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """uint8 (B, 3, H, W) scaled by factors (B,) about the centre, the border repeated -> uint8 (B, 3, H, W)."""
    _, _, h, w = frames.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs, ys], -1)[None] / factors.float()[:, None, None, None]
    out = F.grid_sample(frames.float(), grid.to(frames.device), mode=mode, padding_mode="border", align_corners=True)
    return out.round().clamp(0, 255).to(torch.uint8)


@contextlib.contextmanager
def picture_zoom(encode, decode, mode: str = "bilinear"):
    """While active, every Dynamics' copy prior zooms walking steps' pictures: encode uint8 (B, 3, H, W)
    -> codes (B, h, w), decode codes -> uint8 frames. Yields a counter of the grids it zoomed."""
    original = Dynamics._copy_codes
    count = {"zoomed": 0}

    @torch.no_grad()
    def copy_codes(self, tokens, motion, view, panorama=None, moving=None):
        if motion is None or moving is None:
            return original(self, tokens, motion, view, panorama, moving)
        owed = motion[:, 2].detach() + view[:, 2]                                  # (B,) log zoom after this step
        walk = moving & (owed.abs() > 1e-6)
        if not bool(walk.any()):
            return original(self, tokens, motion, view, panorama, moving)
        count["zoomed"] += int(walk.sum())
        idx = walk.nonzero()[:, 0]
        zoomed = tokens.clone()
        zoomed[idx] = encode(zoom_pictures(decode(tokens[idx]), torch.exp(owed[idx]), mode)).to(tokens.dtype)
        view = view.clone()
        view[idx, 2] = -motion[idx, 2].detach()                                   # the zoom is paid in pictures
        return original(self, zoomed, motion, view, panorama, moving)

    Dynamics._copy_codes = copy_codes
    try:
        yield count
    finally:
        Dynamics._copy_codes = original


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="every other flag goes to `ochre eval` (e.g. --split val --rollouts 100 "
                                        "--long-rollouts 48 --seeds 0 1 --tours 64 --no-learned)")
    ap.add_argument("run", help="world-model run or checkpoint folder")
    ap.add_argument("tokens", help="its token shards")
    ap.add_argument("--out", required=True, help="eval output folder")
    ap.add_argument("--mode", choices=("bilinear", "nearest"), default="bilinear", help="how pictures are zoomed")
    ap.add_argument("--tokenizer", default=None, help="the tokenizer that decodes and encodes (default: the tokens')")
    args, rest = ap.parse_known_args(argv)

    from ochre.cli import main as cli
    from ochre.data.shards import indexed_folder
    from ochre.models.checkpoint import load_tokenizer

    tok = load_tokenizer(args.tokenizer or indexed_folder(args.tokens, "tokenizer_checkpoint")).eval()
    # Autograd stays on: the eval trains its classifier and action model (the patched prior runs without it).
    with picture_zoom(tok.encode, lambda c: tok.decode(c, as_uint8=True), args.mode) as count:
        rc = cli(["eval", args.run, args.tokens, "--out", args.out, *rest,
                  *(["--tokenizer", args.tokenizer] if args.tokenizer else [])])
    print(f"pixel_walk: {count['zoomed']} walking grids zoomed as pictures", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
