"""`ochre demo`: the pipeline end to end on the built-in synthetic world, on a laptop CPU.

synth -> prepare -> data check -> train-tokenizer -> tokenize -> train (world model) -> eval,
then a short decode benchmark.
Writes DIR/report.json: {"metrics": {...}, "bench": {...}, "timings_s": {stage: seconds}}.
Stages whose output is already complete are resumed, not redone, so a killed demo reruns cheaply.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ochre.io import write_json_atomic
from ochre.measure import header, stats_ms, time_calls


class _Stages:
    def __init__(self):
        self.timings: dict[str, float] = {}

    def run(self, name: str, argv: list[str]) -> None:
        from ochre.cli import main

        print(f"\n== {name}: ochre {' '.join(argv)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rc = main(argv)
        self.timings[name] = round(time.perf_counter() - t0, 2)
        if rc != 0:
            raise SystemExit(f"ochre demo: stage {name} failed (exit {rc})")


@torch.no_grad()
def decode_bench(ckpt_dir: Path, batches=(1, 16)) -> dict:
    """Tokenizer decode (codes -> frame) on this CPU: the image half of a live step."""
    from ochre.tokenize import resolve_checkpoint
    from ochre.train.checkpoint import load_tokenizer

    model = load_tokenizer(resolve_checkpoint(ckpt_dir), torch.device("cpu")).eval()
    rows = []
    for b in batches:
        codes = torch.randint(0, model.config.codebook_size, (b, 16, 16))
        s = stats_ms(time_calls(lambda codes=codes: model.decode(codes), warmup=3, runs=20))
        rows.append({"backend": "torch", "batch": b, "stage": "tokenizer_decode",
                     "fps": b * 1e3 / s["ms_p50"], "step_ms_p50": s["ms_p50"], "step_ms_p99": s["ms_p99"]})
    return {**header("cpu"), "rows": rows}


# Default and --quick sizes. The default fits 30 minutes on a slow 2-core machine: the world model
# gets a wall-time budget, so a slower machine trains fewer steps instead of running longer.
DEFAULTS = dict(episodes=64, steps=600, tokenizer_steps=500, world_minutes=12.0, world_steps=100_000, rollouts=32)
QUICK = dict(episodes=6, steps=200, tokenizer_steps=30, world_minutes=1.0, world_steps=30, rollouts=8)


def _settings(args) -> dict:
    base = QUICK if args.quick else DEFAULTS
    return {k: getattr(args, k, None) if getattr(args, k, None) is not None else v for k, v in base.items()}


def _eval_is_current(eval_dir: Path, world: Path) -> bool:
    """The eval output exists and was made from the world model's newest checkpoint."""
    from ochre.train.checkpoint import latest_checkpoint

    metrics, latest = eval_dir / "metrics.json", latest_checkpoint(world)
    return (metrics.is_file() and latest is not None
            and json.loads(metrics.read_text()).get("step") == int(latest.name.split("_")[1]))


def run(args) -> int:
    cfg = _settings(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src, clips, tok, tokens = out / "recordings", out / "clips", out / "tokenizer", out / "tokens"
    world, eval_dir = out / "world", out / "eval"
    stages = _Stages()
    t0 = time.perf_counter()
    stages.run("synth", ["synth", str(src), "--episodes", str(cfg["episodes"]), "--steps", str(cfg["steps"]),
                         "--seed", str(args.seed)])
    stages.run("prepare", ["prepare", str(src), str(clips)])
    stages.run("data_check", ["data", "check", str(clips)])
    stages.run("train_tokenizer", ["train-tokenizer", str(clips), "--out", str(tok), "--preset", "tiny",
                                   "--seed", str(args.seed), "--resume", "--steps", str(cfg["tokenizer_steps"])])
    stages.run("tokenize", ["tokenize", str(clips), "--tokenizer", str(tok), "--out", str(tokens)])
    train = ["train", str(tokens), "--out", str(world), "--preset", "tiny", "--seed", str(args.seed), "--resume",
             "--minutes", str(cfg["world_minutes"]), "--steps", str(cfg["world_steps"])]
    if args.quick:
        train += ["--batch", "4", "--ckpt-every", "10", "--log-every", "5"]
    stages.run("train", train)
    if _eval_is_current(eval_dir, world):
        print(f"\n== eval: already complete ({eval_dir / 'metrics.json'})", file=sys.stderr)
        stages.timings["eval"] = 0.0
    else:
        stages.run("eval", ["eval", str(world), str(tokens), "--out", str(eval_dir), "--rollouts",
                            str(cfg["rollouts"]), "--seed", str(args.seed)])
    metrics = {**json.loads((tok / "metrics.json").read_text()), **json.loads((eval_dir / "metrics.json").read_text())}
    metrics["tokenizer_train_frames_per_s"] = _median_log(tok, "frames_per_s")
    metrics["train_frames_per_s"] = _median_log(world, "frames_per_s")
    metrics["train_steps"] = metrics.pop("step")
    bench = decode_bench(tok)
    metrics["decode_frames_per_s"] = max(r["fps"] for r in bench["rows"])
    stages.timings["total"] = round(time.perf_counter() - t0, 2)
    report = {"metrics": metrics, "bench": bench, "timings_s": stages.timings}
    write_json_atomic(out / "report.json", report)
    print(json.dumps({"metrics": metrics, "timings_s": stages.timings}, indent=2))
    print(f"wrote {out / 'report.json'}; dreams in {eval_dir / 'dream.mp4'}, PSNR plot in {eval_dir / 'psnr.png'}, "
          f"reconstructions in {tok / 'recon.png'}")
    return 0


def _median_log(run_dir: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    values = sorted(r[key] for r in rows if key in r)
    return values[len(values) // 2] if values else 0.0
