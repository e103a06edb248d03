"""The eval instruments' cost (docs/metrics.md: tours, inverse-dynamics model, two-sample test) at the
default demo's size, each beside a baseline in the same run.

    python -m ochre.bench.instruments [--clips DIR] [--contexts 32] [--out FILE]

Rows:
  tours     tour_contexts, render_truth (every segment from every context), the metrics of one dream
            (the oracle), the zoom estimator as matrix products  vs  gathering its samples
  idm       load_or_train at the defaults on the train clips (wall seconds), its balanced accuracy on
            real `test` pairs, one train step channels-last  vs  NCHW
  c2st      one test on 2 x 1,000 frames: uniform noise vs real, real vs real
Without --clips it makes the default demo's data (64 episodes x 600 ticks, world seed 0) in the cache.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ochre.bench.common import data_record, header, result_path, stats_ms, time_calls
from ochre.data.check import phase_shift
from ochre.data.loader import WindowDataset, split_sources
from ochre.data.shards import read_index
from ochre.eval import idm, tours
from ochre.eval.c2st import c2st
from ochre.eval.cnn import to_input as cnn_input


def demo_clips(episodes: int = 64, steps: int = 600) -> Path:
    """The default demo's recordings, prepared (made once, then reused from the cache)."""
    from ochre.data.prepare import PrepareConfig, prepare
    from ochre.data.synth import SynthConfig, synthesize
    from ochre.models.lookup import cache_dir

    root = cache_dir() / "bench-instruments"
    synthesize(root / "src", SynthConfig(episodes=episodes, steps=steps, seed=0))
    if not (root / "clips" / "index.json").is_file():
        prepare(root / "src", root / "clips", PrepareConfig())
    return root / "clips"


def gather_zooms(frames: np.ndarray) -> np.ndarray:
    """zoom_factors computed by gathering the bilinear samples (the baseline of the matrix form)."""
    shift = phase_shift(frames)
    grey = frames.astype(np.float32).mean(axis=-1)
    size, m = grey.shape[1], tours.ZOOM_MARGIN
    centres = np.arange(m, size - m) + 0.5 - size / 2
    errors = []
    for z in tours.ZOOMS:
        out = grey[:-1]
        for axis in (1, 2):
            x = np.clip(size / 2 + centres[None] / z - shift[:, axis - 1, None] - 0.5, 0, size - 1)
            x0 = np.minimum(np.floor(x).astype(np.int64), size - 2)
            shape = (len(x), -1, 1) if axis == 1 else (len(x), 1, -1)
            lo = np.take_along_axis(out, x0.reshape(shape), axis)
            hi = np.take_along_axis(out, x0.reshape(shape) + 1, axis)
            out = lo + (hi - lo) * (x - x0).astype(np.float32).reshape(shape)
        errors.append(np.square(out - grey[1:, m:-m, m:-m]).mean(axis=(1, 2)))
    return np.asarray(tours.ZOOMS)[np.argmin(errors, axis=0)]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_tours(clips: Path, n: int) -> dict:
    test = split_sources(read_index(clips))["test"]
    contexts, t_contexts = _timed(lambda: tours.tour_contexts(clips, test, n))
    if isinstance(contexts, str):
        raise SystemExit(contexts)
    truth, t_truth = _timed(lambda: tours.render_truth(contexts, 8.0))
    (metrics, arrays), t_metrics = _timed(lambda: tours.run_tours(lambda c, a, t: t, contexts, 8.0, truth=truth,
                                                                  progress=False))
    walks = np.concatenate([arrays[f"{name}/truth"].reshape(-1, 64, 64, 3) for name in tours.WALKS])
    same = bool((tours.zoom_factors(walks) == gather_zooms(walks)).all())
    rows = {variant: stats_ms(time_calls(lambda f=f: f(walks), warmup=1, runs=5))
            for variant, f in (("matrix products", tours.zoom_factors), ("gather", gather_zooms))}
    frames = sum(v.shape[0] * v.shape[1] for k, v in truth.items() if k.endswith("/truth"))
    return {"contexts": len(contexts), "contexts_s": t_contexts, "render_truth_s": t_truth,
            "truth_frames": frames, "render_frames_per_s": frames / t_truth,
            "metrics_of_one_dream_s": t_metrics, "oracle": {k: v for k, v in metrics.items() if k.count("/") == 1},
            "zoom_pairs": len(walks) - 1, "zoom": rows, "zoom_same_result": same,
            "zoom_speedup": rows["gather"]["ms_p50"] / rows["matrix products"]["ms_p50"]}


def _pairs(clips: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = WindowDataset(clips, window=2, split=split, shuffle=False)
    frames, actions = [], []
    for sample in ds.samples():
        clip = ds.load_clip(sample, 0, sample["meta"]["frames"])
        frames.append(clip["frames"].permute(0, 2, 3, 1).numpy())
        actions.append(clip["actions"].numpy())
    return frames, actions


def _step_ms(channels_last: bool) -> dict:
    """One IDM train step (batch 64) with the stack's layout as given."""
    model = idm.IDM(idm.IDMConfig())
    if not channels_last:
        model = model.to(memory_format=torch.contiguous_format)
    opt = torch.optim.AdamW(model.parameters())
    pairs, y = torch.randint(0, 256, (64, 2, 64, 64, 3), dtype=torch.uint8), torch.randint(0, 3, (64, 4))
    to_input = cnn_input if channels_last else (lambda p: cnn_input(p).contiguous())

    def step():
        x = to_input(pairs)
        logits = model.head(model.features(x).flatten(1)).view(64, 4, 3)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return stats_ms(time_calls(step, warmup=3, runs=20))


def bench_idm(clips: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        model, seconds = _timed(lambda: idm.load_or_train(clips, folder, progress=False))
        record = json.loads((Path(folder) / "config.json").read_text())
    frames, actions = _pairs(clips, "test")
    real = [idm.accuracy(model, f[None], a[None]) for f, a in zip(frames, actions)]
    layout = {"channels-last": _step_ms(True), "nchw": _step_ms(False)}
    return {"train_s": seconds, "pairs": record["pairs"], "steps": record["config"]["steps"],
            "pairs_per_s": record["config"]["steps"] * record["config"]["batch"] / seconds,
            "final_loss": record["final_loss"],
            "real_test_acc": {k: float(np.mean([r[k] for r in real])) for k in real[0]},
            "train_step": layout,
            "channels_last_speedup": layout["nchw"]["ms_p50"] / layout["channels-last"]["ms_p50"]}


def bench_c2st(clips: Path) -> dict:
    frames, _ = _pairs(clips, "all")
    joined = np.concatenate(frames)
    rollouts = joined[: len(joined) // 16 * 16].reshape(-1, 16, 64, 64, 3)
    a, b = rollouts[0::2][:63], rollouts[1::2][:63]                       # 1,008 frames a side
    noise = np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8)
    out = {"frames_a_side": int(a.shape[0] * a.shape[1])}
    for name, fake in (("noise_vs_real", noise), ("real_vs_real", a)):
        score, seconds = _timed(lambda f=fake: c2st(f, b))
        out[name] = {"accuracy": score, "seconds": seconds}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ochre.bench.instruments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=Path, help="synthetic clip shards (default: the demo's, made in the cache)")
    p.add_argument("--contexts", type=int, default=32, help="tour contexts (default 32, the demo's)")
    p.add_argument("--out", type=Path, help="result file (default bench/results/instruments_<device>_<date>.json)")
    args = p.parse_args(argv)
    clips = args.clips or demo_clips()
    result = {**header(), "threads": torch.get_num_threads(), "clips": data_record(clips),
              "tours": bench_tours(clips, args.contexts), "idm": bench_idm(clips), "c2st": bench_c2st(clips)}
    out = args.out or result_path("instruments")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
