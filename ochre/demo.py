"""`ochre demo`: the pipeline end to end on the built-in synthetic world, on a laptop CPU.

synth -> prepare -> data check -> train-tokenizer -> tokenize, then a short decode benchmark.
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


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src, clips, tok, tokens = out / "recordings", out / "clips", out / "tokenizer", out / "tokens"
    stages = _Stages()
    t0 = time.perf_counter()
    stages.run("synth", ["synth", str(src), "--episodes", str(args.episodes), "--steps", str(args.steps),
                         "--seed", str(args.seed)])
    stages.run("prepare", ["prepare", str(src), str(clips)])
    stages.run("data_check", ["data", "check", str(clips)])
    train = ["train-tokenizer", str(clips), "--out", str(tok), "--preset", "tiny", "--seed", str(args.seed),
             "--resume"]
    if args.tokenizer_steps:
        train += ["--steps", str(args.tokenizer_steps)]
    stages.run("train_tokenizer", train)
    stages.run("tokenize", ["tokenize", str(clips), "--tokenizer", str(tok), "--out", str(tokens)])
    metrics = json.loads((tok / "metrics.json").read_text())
    train_log = [json.loads(line) for line in (tok / "log.jsonl").read_text().splitlines()]
    metrics["train_frames_per_s"] = sorted(r["frames_per_s"] for r in train_log)[len(train_log) // 2]
    bench = decode_bench(tok)
    metrics["decode_frames_per_s"] = max(r["fps"] for r in bench["rows"])
    stages.timings["total"] = round(time.perf_counter() - t0, 2)
    report = {"metrics": metrics, "bench": bench, "timings_s": stages.timings}
    write_json_atomic(out / "report.json", report)
    print(json.dumps({"metrics": metrics, "timings_s": stages.timings}, indent=2))
    print(f"wrote {out / 'report.json'}; reconstructions in {tok / 'recon.png'}")
    return 0
