"""Frame encodings for `ochre serve` at 64×64: bytes per frame and encode time per format.

    python -m ochre.bench.serve_encoding [--frames 128] [--runs 5]

The frames are dreams of the model `ochre serve` plays by default (eager torch, random valid
actions from its context frames), since the model's sampled detail is what a codec has to keep.
Each format encodes every frame `runs` times after one warm-up pass; per format: mean and p99
bytes, encode µs p50/p99, the bandwidth one player needs at 20 frames/s, and for the lossy ones the
PSNR of the decoded frame against the frame (what the player loses). Writes
bench/results/serve_encoding_<device>_<date>.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ochre.bench.common import header, result_path

FPS = 20


def dream_frames(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 64, 64, 3): the default model's dreams, 16 steps from each of its context frames in turn."""
    from ochre.models.lookup import resolve
    from ochre.runtime.stepper import make_stepper

    model = resolve()
    contexts = model.context_frames()
    stepper = make_stepper("torch", model, seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        out.append(stepper.reset(contexts[len(out) // 16 % len(contexts)][None])[0].copy())
        for _ in range(15):
            action = rng.uniform(-1, 1, 4).astype(np.float32)
            action[2:] = action[2:].round()
            out.append(stepper.step(action[None])[0].copy())
    return np.stack(out[:n])


def decode(data: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(min(60.0, 10 * np.log10(255.0**2 / max(mse, 1e-12))))


def measure(frames: np.ndarray, fmt: str, runs: int) -> dict:
    from ochre.runtime.serve.frames import encode

    sizes = [len(encode(f, fmt)) for f in frames]                    # also the warm-up pass
    times = []
    for _ in range(runs):
        for f in frames:
            t0 = time.perf_counter()
            encode(f, fmt)
            times.append(time.perf_counter() - t0)
    us = np.asarray(times) * 1e6
    extra = {}
    if fmt in ("jpeg", "webp"):
        extra["psnr_db"] = float(np.mean([psnr(f, decode(encode(f, fmt))) for f in frames]))
    return {**extra, "format": fmt, "bytes_mean": float(np.mean(sizes)), "bytes_p99": float(np.percentile(sizes, 99)),
            "encode_us_p50": float(np.median(us)), "encode_us_p99": float(np.percentile(us, 99)),
            "kbit_per_s_at_20fps": float(np.mean(sizes)) * 8 * FPS / 1e3, "frames": len(frames), "runs": runs}


def main(argv=None) -> int:
    from ochre.io import write_json_atomic
    from ochre.runtime.serve.frames import JPEG_QUALITY, PAGE_FORMAT, WEBP_QUALITY, available

    p = argparse.ArgumentParser(prog="python -m ochre.bench.serve_encoding", description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=128, help="dreamed frames to encode (default 128)")
    p.add_argument("--runs", type=int, default=5, help="timed passes over the frames per format (default 5)")
    p.add_argument("--out", default=None, help="JSON file (default bench/results/serve_encoding_<device>_<date>.json)")
    args = p.parse_args(argv)
    frames = dream_frames(args.frames)
    rows = [measure(frames, fmt, args.runs) for fmt in available()]
    for r in rows:
        print(f"{r['format']:5s} {r['bytes_mean']:8.0f} B/frame  encode p50 {r['encode_us_p50']:7.1f} µs  "
              f"p99 {r['encode_us_p99']:7.1f} µs  {r['kbit_per_s_at_20fps']:7.0f} kbit/s at {FPS} fps"
              + (f"  PSNR {r['psnr_db']:.1f} dB" if "psnr_db" in r else ""))
    out = args.out or result_path("serve_encoding")
    write_json_atomic(out, {"benchmark": "serve_encoding", **header(), "page_format": PAGE_FORMAT,
                            "jpeg_quality": JPEG_QUALITY, "webp_quality": WEBP_QUALITY,
                            "what": "one 64x64 RGB frame encoded for a WebSocket binary message", "rows": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
