"""How far a known-motion prior can carry the tours' walks: the context frame zoomed, against the truth.

    python -m ochre.bench.walk_ceiling TOKENS [--split val] [--tours 64] [--action-model IDM] [--out FILE]

`tour/walk/psnr@16` asks a dream of 16 steps forward to beat holding the context frame by 1 dB
(docs/metrics.md#bars). The world model's motion prior for walking is a zoom (`zoom_per_unit`,
measured on the training clips): this asks what that prior can reach at best, with no network at
all. From each tour context it scores, at steps 4 and 16 of the `walk` segment:
- `repeat`: the clip's context frame held (the bar's baseline, on the clip frame the dreams start from);
- `still_recon`: the tokenizer's reconstruction of it held (what a frozen dream shows);
- `commanded_zoom`: the context frame zoomed by e^(zoom_per_unit · steps) about the centre (bilinear);
- `commanded_zoom_recon`: the same through the tokenizer (encode, decode): a prior that re-encodes a
  zoomed picture;
- `commanded_code_zoom`: the context's codes zoomed by that factor (nearest code), decoded: a prior
  that moves whole codes, as the model's copy prior does;
- `best_one_zoom`: the one zoom factor of a grid that scores best over all contexts, in hindsight;
- `best_zoom_each`: each context's best factor, in hindsight: the ceiling of any uniform zoom;
- `oracle_recon`: the tokenizer's reconstruction of the truth: the ceiling of any dynamics model;
- `best_one_plane`, `best_plane_each`: a ground-plane flow instead of a zoom (below a horizon row, a
  pixel at depth d ∝ 1 / (rows below the horizon) comes nearer by the distance walked; the sky stays),
  its horizon row and distance the best of a grid over all contexts, or per context, in hindsight.
Each with its difference to `repeat` and a 95 % bootstrap interval over contexts.
Then what the eval's action model (TOKENS/idm, `ochre eval`'s instrument, as it is; trained if absent) reads as
walking: the share of the walk's step pairs it labels `forward`, for the true pairs and for each frame
against one step of a prior applied to it (the commanded zoom, that zoom at 1.5× and 2× the rate, and the
ground-plane flow: the one that scores best at step 4, and two with a level view's horizon). The action
model's `idm/ratio_forward` asks a dream's walks to read as walking as often as real ones do.
A probe: it chooses nothing, so it may read any split.
Writes bench/results/walk_ceiling_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ochre.bench.common import data_record, header, result_path
from ochre.io import write_json_atomic

HORIZONS = (4, 16)
ZOOM_GRID = np.exp(np.linspace(-0.1, 0.6, 36))     # factors 0.90 .. 1.82 for the hindsight rows
SEGMENT = "walk"
HORIZON_ROWS = np.arange(8, 57, 4)                  # candidate horizon rows of a 64-row frame
PLANE_GRID = np.linspace(0.0, 0.02, 11)             # candidate flows per step: walked distance / (eye · focal)
RATES = (1.0, 1.5, 2.0)                             # the commanded zoom's rate, and faster ones, for the action model
# Plane flows with the horizon at the middle row (a level view) for the action model, beside the one that scores
# best at step 4: a step of 0.5 blocks at an eye height of 1.6 blocks and a 45.7-pixel focal length (the
# synthetic renderer's 70 degrees at 64 pixels) is a flow of ~0.007 a step.
LEVEL_PLANES = ((32.0, 0.005), (32.0, 0.01))


def zoom_frames(frames: np.ndarray, factors) -> np.ndarray:
    """uint8 (N, H, W, 3) scaled by factors (N,) or one factor about the image centre (bilinear, the
    border repeated where a factor below 1 shows beyond the frame) -> uint8 (N, H, W, 3)."""
    import torch

    from ochre.bench.pixel_walk import zoom_pictures

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    z = torch.as_tensor(np.broadcast_to(np.asarray(factors, np.float32), (len(frames),)).copy())
    return zoom_pictures(x, z).permute(0, 2, 3, 1).numpy()


def plane_flow(frames: np.ndarray, horizon: float, flow: float) -> np.ndarray:
    """uint8 (N, H, W, 3) moved as a flat ground below row `horizon` moves when the camera walks forward:
    a pixel ρ rows below the horizon is at depth ∝ 1/ρ, and walking `flow` (the distance over eye height
    times focal length, per pixel row) brings it to ρ' with ρ = ρ' / (1 + flow · ρ'), its column scaled
    about the centre by the same factor; rows above the horizon (the sky, far terrain) stay. Bilinear,
    the border repeated -> uint8 (N, H, W, 3)."""
    import torch
    import torch.nn.functional as F

    n, h, w, _ = frames.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    below = ys - horizon
    scale = torch.where(below > 0, 1 + flow * below, torch.ones_like(below))              # (H, W)
    sy = torch.where(below > 0, horizon + below / scale, ys)
    sx = w / 2 + (xs - w / 2) / scale
    grid = torch.stack([sx / w * 2 - 1, sy / h * 2 - 1], -1)[None].expand(n, h, w, 2)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def zoom_codes(codes: np.ndarray, factor: float) -> np.ndarray:
    """(N, h, w, ...) codes zoomed by factor about the grid's centre, each position taking the nearest code."""
    def nearest(n: int) -> np.ndarray:
        return np.clip(np.round((np.arange(n) + 0.5 - n / 2) / factor + n / 2 - 0.5), 0, n - 1).astype(int)
    return codes[:, nearest(codes.shape[1])][:, :, nearest(codes.shape[2])]


def ceiling(context: np.ndarray, truth: np.ndarray, zoom_per_unit: float, encode=None, decode=None,
            seed: int = 0) -> dict:
    """context uint8 (N, H, W, 3), the segment's truth uint8 (N, S+1, H, W, 3), the prior's log zoom per
    step; encode (uint8 frames -> codes) and decode (codes -> uint8 frames) for the tokenizer's rows,
    left out without them -> {"<row>@<h>": {"psnr", "over_repeat", "interval"}, ...}."""
    from ochre.eval.rollouts import psnr

    rng = np.random.default_rng(seed)
    boots = rng.integers(0, len(context), (1000, len(context)))

    def row(scores: np.ndarray, base: np.ndarray) -> dict:
        diff = scores - base
        lo, hi = np.percentile(diff[boots].mean(1), [2.5, 97.5])
        return {"psnr": float(scores.mean()), "over_repeat": float(diff.mean()), "interval": [float(lo), float(hi)]}

    zoomed = [zoom_frames(context, z) for z in ZOOM_GRID]                # the same for every horizon
    codes = encode(context) if encode is not None else None
    out: dict = {}
    for h in HORIZONS:
        target = truth[:, h]
        base = psnr(context, target)
        factor = float(np.exp(zoom_per_unit * h))
        commanded = zoom_frames(context, factor)
        grid = np.stack([psnr(frames, target) for frames in zoomed])            # (Z, N)
        planes = np.stack([psnr(plane_flow(context, row_, flow * h), target)
                           for row_ in HORIZON_ROWS for flow in PLANE_GRID])    # (rows · flows, N)
        rows = {"repeat": base, "commanded_zoom": psnr(commanded, target),
                "best_one_zoom": grid[grid.mean(1).argmax()], "best_zoom_each": grid.max(0),
                "best_one_plane": planes[planes.mean(1).argmax()], "best_plane_each": planes.max(0)}
        if codes is not None:
            rows.update(still_recon=psnr(decode(codes), target),
                        commanded_zoom_recon=psnr(decode(encode(commanded)), target),
                        commanded_code_zoom=psnr(decode(zoom_codes(codes, factor)), target),
                        oracle_recon=psnr(decode(encode(target)), target))
        out.update({f"{name}@{h}": row(scores, base) for name, scores in rows.items()})
        out[f"commanded_factor@{h}"] = factor
        out[f"best_one_zoom_factor@{h}"] = float(ZOOM_GRID[grid.mean(1).argmax()])
        out[f"zoom_grid@{h}"] = {f"{z:.4f}": float(v) for z, v in zip(ZOOM_GRID, grid.mean(1))}     # factor -> dB
        best = int(planes.mean(1).argmax())
        out[f"best_one_plane_setting@{h}"] = {"horizon_row": float(HORIZON_ROWS[best // len(PLANE_GRID)]),
                                      "flow_per_step": float(PLANE_GRID[best % len(PLANE_GRID)])}
    return out


def read_as_walking(predict, truth: np.ndarray, zoom_per_unit: float, planes) -> dict:
    """The share of a walk's step pairs the action model labels forward: predict (uint8 pairs (P, 2, H, W,
    3) -> classes (P, 4) in ochre.eval.idm's head order), the walk's truth uint8 (N, S+1, H, W, 3), the
    prior's log zoom per step, plane flows [(horizon row, flow per step), ...] -> {"true": share,
    "zoom_x<rate>": share, "plane_row<row>_flow<flow>": share, "pairs": P}."""
    from ochre.eval.idm import HEADS

    forward = HEADS.index("forward")
    first = truth[:, :-1].reshape(-1, *truth.shape[2:])                          # (P, H, W, 3)

    def share(second: np.ndarray) -> float:
        return float((predict(np.stack([first, second], 1))[:, forward] == 2).mean())

    out = {"true": share(truth[:, 1:].reshape(first.shape)), "pairs": len(first)}
    out.update({f"zoom_x{rate:g}": share(zoom_frames(first, float(np.exp(zoom_per_unit * rate)))) for rate in RATES})
    out.update({f"plane_row{row:g}_flow{flow:g}": share(plane_flow(first, row, flow)) for row, flow in planes})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tokens", help="token shards of a synthetic data set (`ochre tokenize`; the demo's tokens/)")
    ap.add_argument("--split", default="val", choices=("val", "test"), help="whose tour contexts (default val)")
    ap.add_argument("--tours", type=int, default=64, help="tour contexts (default 64)")
    ap.add_argument("--action-model", default=None,
                    help="the action model's folder (default TOKENS/idm; for a second world, the main data's, as "
                         "`ochre eval --test-world` reads it)")
    ap.add_argument("--out", default=None, help="result file (default bench/results/walk_ceiling_<device>_<date>.json)")
    args = ap.parse_args(argv)

    import torch

    from ochre.data.shards import indexed_folder, read_index
    from ochre.eval import idm, tours
    from ochre.eval import rollouts as ro
    from ochre.models.checkpoint import load_tokenizer

    t0 = time.time()
    index = read_index(args.tokens)
    zoom = (index.get("shift_per_unit") or {}).get("zoom")
    if not zoom:
        raise SystemExit(f"walk_ceiling: {args.tokens} records no measured zoom per unit of walking "
                         "(shift_per_unit.zoom, written by `ochre tokenize`)")
    clips = indexed_folder(args.tokens, "clips", index)
    contexts = tours.tour_contexts(clips, frozenset(t.source for t in ro.trajectories(clips, args.split)), args.tours)
    if isinstance(contexts, str):
        raise SystemExit(f"walk_ceiling: {contexts}")
    truth = tours.render_truth(contexts, float(index.get("fps", 8.0)))[f"{SEGMENT}/truth"]
    tok = load_tokenizer(indexed_folder(args.tokens, "tokenizer_checkpoint", index), torch.device("cpu")).eval()

    @torch.no_grad()
    def encode(frames: np.ndarray) -> np.ndarray:
        return tok.encode(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()).numpy()

    @torch.no_grad()
    def decode(codes: np.ndarray) -> np.ndarray:
        return tok.decode(torch.from_numpy(codes), as_uint8=True).permute(0, 2, 3, 1).numpy()

    rows = ceiling(np.stack([c.frame for c in contexts]), truth, float(zoom), encode, decode)
    own = Path(args.tokens) / "idm"
    if args.action_model or (own / "config.json").is_file():        # the eval's instrument, as it was trained
        action_model, _ = idm.load(args.action_model or own)
    else:
        action_model = idm.load_or_train(clips, own, log=print)
    best = rows["best_one_plane_setting@4"]
    walking = read_as_walking(lambda pairs: idm.predict(action_model, pairs), truth, float(zoom),
                              [(best["horizon_row"], best["flow_per_step"]), *LEVEL_PLANES])
    result = {"benchmark": "walk_ceiling", **header("cpu"), "data": data_record(args.tokens), "split": args.split,
              "segment": SEGMENT, "contexts": len(contexts), "zoom_per_unit": float(zoom), "rows": rows,
              "read_as_forward": walking, "action_model": "given" if args.action_model else "TOKENS/idm",
              "seconds": round(time.time() - t0, 1)}
    out = args.out or result_path("walk_ceiling")
    write_json_atomic(out, result)
    for h in HORIZONS:
        for name in ("repeat", "still_recon", "commanded_code_zoom", "commanded_zoom_recon", "commanded_zoom",
                     "best_one_zoom", "best_zoom_each", "best_one_plane", "best_plane_each", "oracle_recon"):
            r = rows[f"{name}@{h}"]
            print(f"{SEGMENT} step {h:>2} {name:<22} {r['psnr']:6.2f} dB  {r['over_repeat']:+.2f} "
                  f"[{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}] over repeat")
    print("share of the walk's step pairs the action model reads as forward: "
          + ", ".join(f"{k} {v:.3f}" for k, v in walking.items() if k != "pairs") + f" ({walking['pairs']} pairs)")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
