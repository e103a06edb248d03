"""`ochre demo`: the pipeline end to end on the built-in synthetic world (or, with --world luanti, on
footage of the real game Luanti), on a laptop CPU.

synth (or record luanti) -> prepare -> data check -> train-tokenizer -> tokenize -> train (world model) [-> train the
seed-v3 recipe on the same tokens and budget, with --compare seed-v3] -> eval -> export (ONNX and
AOTInductor) -> headless play -> bench, then a short decode benchmark. A second synthetic world
(another world seed, never trained on) is rendered, prepared and tokenized with the same tokenizer,
and eval reports it as test_world/ (docs/metrics.md#splits).
Writes DIR/report.json: {"metrics": {...}, "bench": {the `ochre bench` JSON}, "timings_s": {stage: seconds}},
and DIR/report.md for people (ochre.demo_report). Every stage is an `ochre` command; a stage whose
output is complete (and made from the current world model) is skipped, so a killed demo reruns cheaply.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from ochre.choices import COMPARE  # recipes `--compare` trains beside the ochre recipe
from ochre.device import compile_pays, pick_device
from ochre.io import write_json_atomic
from ochre.measure import header, stats_ms, time_calls


class _Stages:
    def __init__(self):
        self.timings: dict[str, float] = {}

    def run(self, name: str, argv: list[str], own_process: bool = False) -> None:
        """Run one `ochre` command as (part of) stage `name`; its seconds add to the stage's.
        own_process: in a child process. The live stages need it: the native libraries they load
        (onnxruntime, AOTInductor packages) and decord, which the training stages load, do not
        share a process cleanly, since decord's exit handler then frees an invalid pointer and
        the demo would end in a segmentation fault after its last line."""
        from ochre.cli import main

        print(f"\n== {name}: ochre {' '.join(argv)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if own_process:
            import subprocess

            rc = subprocess.run([sys.executable, "-m", "ochre", *argv]).returncode
        else:
            rc = main(argv)
        self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 2)
        if rc != 0:
            raise SystemExit(f"ochre demo: stage {name} failed (exit {rc})")

    def skip(self, name: str, why: str) -> None:
        print(f"\n== {name}: already complete ({why})", file=sys.stderr)
        self.timings[name] = 0.0


@torch.no_grad()
def decode_bench(ckpt_dir: Path, batches=(1, 16)) -> dict:
    """Tokenizer decode (codes -> frame) on this CPU: the image half of a live step."""
    from ochre.models.checkpoint import load_tokenizer

    model = load_tokenizer(ckpt_dir, torch.device("cpu")).eval()
    rows = []
    for b in batches:
        codes = torch.randint(0, model.config.codebook_size, (b, 16, 16))
        s = stats_ms(time_calls(lambda codes=codes: model.decode(codes), warmup=3, runs=20))
        rows.append({"backend": "torch", "batch": b, "stage": "tokenizer_decode",
                     "fps": b * 1e3 / s["ms_p50"], "step_ms_p50": s["ms_p50"], "step_ms_p99": s["ms_p99"]})
    return {**header("cpu"), "rows": rows}


# Default and --quick sizes. The default aims at 30 minutes on 2 cores: 29.9 on 2026-12-04 under the
# allocator settings of ochre.device.keep_large_blocks (46.6 and 36.2 minutes on two machines before
# them, README): the world model gets a wall-time budget, so a slower machine trains fewer steps
# instead of running longer, but every other stage scales with it. 200 recordings give the test split
# 10 trajectories (5 %) for 100 rollouts; the second world's 16 are all held out. The eval runs 2 noise
# seeds, the boost-free learned/ twin on the short rollouts only and 16 tours on the second world (the
# parts whose cost the bars do not read). The live stages export and bench batch 1, the player's case
# that the live bars read (batch 8 cost another ~100 s of exports on a 2-core CPU: `ochre bench`
# measures batches on its own). --quick leaves the AOTInductor compiles out.
DEFAULTS = dict(episodes=200, steps=400, world2_episodes=16, tokenizer_steps=500, world_minutes=12.0,
                world_steps=100_000, rollouts=100, long_rollouts=16, seeds=(0, 1), tours=32, world_tours=16,
                idm_steps=1200, bench_backends=("torch", "onnxruntime", "native"), bench_batches=(1,),
                bench_runs=100, bench_warmup=10, play_steps=64)
QUICK = dict(episodes=6, steps=200, world2_episodes=2, tokenizer_steps=30, world_minutes=1.0, world_steps=30,
             rollouts=8, long_rollouts=2, seeds=(0,), tours=4, world_tours=4, idm_steps=60,
             bench_backends=("torch", "onnxruntime"), bench_batches=(1,), bench_runs=20, bench_warmup=5,
             play_steps=16)
WORLD2_SEED = 1000           # the second world's seed is the demo's --seed + this: another map


# Luanti records in real time (20 frames/s per game at most, ~2-10 s to place the player per episode),
# so its default set is smaller: 24 x 400 steps is ~9.6k frames, ~15 minutes on 2 cores.
LUANTI = dict(episodes=24, steps=400, world2_episodes=4, tours=0, world_tours=0)
LUANTI_QUICK = dict(episodes=3, steps=120, world2_episodes=1, tours=0, world_tours=0)
# Why the Luanti demo has no tours: kept in report.json beside the metrics.
TOURS_SKIPPED = ("Luanti footage: the tours replay scripted actions through the synthetic world's renderer for the "
                 "true frames; here the truth would have to come from the game itself, run beside the model from "
                 "each test pose")


def _settings(args) -> dict:
    base = QUICK if args.quick else DEFAULTS
    if args.world == "luanti":
        base = {**base, **(LUANTI_QUICK if args.quick else LUANTI)}
    return {k: getattr(args, k, None) if getattr(args, k, None) is not None else v for k, v in base.items()}


def _eval_is_current(eval_dir: Path, world: Path, compare: str | None, cfg: dict) -> bool:
    """The eval output exists, was made from the world model's newest checkpoint with these
    settings and, with a comparison recipe, holds its metrics too."""
    from ochre.models.checkpoint import latest_checkpoint

    metrics, latest = eval_dir / "metrics.json", latest_checkpoint(world)
    if not metrics.is_file() or latest is None:
        return False
    m = json.loads(metrics.read_text())
    return (m.get("step") == int(latest.name.split("_")[1]) and m.get("rollouts_asked") == cfg["rollouts"]
            and m.get("seeds") == list(cfg["seeds"]) and "test_world/psnr@8" in m
            and (compare is None or f"{compare}/psnr@8" in m))


def _made_from(path: Path, world_hash: str, key=lambda m: m.get("sources", {}).get("world", {}).get("hash")) -> bool:
    """A JSON record (export manifest, play stats, bench result) exists and names this world model."""
    try:
        return key(json.loads(path.read_text())) == world_hash
    except (OSError, json.JSONDecodeError):
        return False


def _exported(fmt: str, folder: Path, world_hash: str) -> bool:
    """An export folder of this world model that this install can run (the format's own manifest
    check: its format version, and for AOTInductor the torch and CPU it was compiled for)."""
    from ochre.export import aoti, onnx

    try:
        m = (aoti if fmt == "aoti" else onnx).read_manifest(folder)
    except (FileNotFoundError, ValueError):
        return False
    return m.get("sources", {}).get("world", {}).get("hash") == world_hash


def _play_actions(steps: int) -> str:
    """A scripted tour for headless play (docs/data.md#action-files): turn right, walk, turn left while
    walking, look down and back up, in equal parts."""
    parts = [("turn right", "0.5 0 0 0"), ("walk forward", "0 0 0 1"), ("turn left, walking", "-0.5 0 0 1"),
             ("look down", "0 0.4 0 0"), ("look up", "0 -0.4 0 0")]
    lines = ["# yaw pitch move_x move_z (docs/data.md#actions units): the demo's headless tour"]
    for i, (what, row) in enumerate(parts):
        n = steps * (i + 1) // len(parts) - steps * i // len(parts)
        lines += [f"# {what}"] + [row] * n
    return "\n".join(lines) + "\n"


def _live_stages(stages: _Stages, cfg: dict, out: Path, world: Path, seed: int) -> dict:
    """export -> headless play -> bench for the newest world checkpoint; returns the bench JSON."""
    from ochre.models.checkpoint import checkpoint_hash

    want = checkpoint_hash(world)
    backends, batches = list(cfg["bench_backends"]), list(cfg["bench_batches"])
    onnx_batches = sorted({1, *batches}) if "onnxruntime" in backends else [1]     # play runs the batch-1 ONNX
    aoti_batches = batches if "native" in backends else []
    exports = [("onnx", b) for b in onnx_batches] + [("aoti", b) for b in aoti_batches]
    folders = {(fmt, b): out / "export" / f"{fmt}-b{b}" for fmt, b in exports}
    todo = [(fmt, b) for fmt, b in exports if not _exported(fmt, folders[(fmt, b)], want)]
    if not todo:
        stages.skip("export", f"{len(exports)} folders in {out / 'export'}")
    for fmt, b in todo:
        stages.run("export", ["export", str(world), "--out", str(folders[(fmt, b)]), "--batch", str(b),
                              "--format", fmt], own_process=True)

    play = out / "play"
    stats = play / "stats.json"
    if _made_from(stats, want, key=lambda s: s["world_hash"] if s.get("steps") == cfg["play_steps"] else None) \
            and (play / "dream.mp4").is_file():
        stages.skip("play", str(stats))
    else:
        play.mkdir(parents=True, exist_ok=True)
        (play / "actions.txt").write_text(_play_actions(cfg["play_steps"]))
        stages.run("play", ["play", "--headless", "--checkpoint", str(world), "--onnx", str(folders[("onnx", 1)]),
                            "--actions", str(play / "actions.txt"), "--record", str(play / "dream.mp4"), "--stats",
                            str(stats), "--seed", str(seed)], own_process=True)

    result = out / "bench" / "live.json"
    settings = {"world_hash": want, "backends": backends, "batches": batches, "runs": cfg["bench_runs"]}
    if _made_from(result, want, key=lambda r: r.get("world_hash") if {k: r.get(k) for k in settings} == settings
                  else None):
        stages.skip("bench", str(result))
    else:
        given = [["--onnx", *(str(folders[("onnx", b)]) for b in batches)] if "onnxruntime" in backends else [],
                 ["--aoti", *(str(folders[("aoti", b)]) for b in aoti_batches)] if aoti_batches else []]
        stages.run("bench", ["bench", "--checkpoint", str(world), "--backends", *backends, "--batch",
                             *map(str, batches), *given[0], *given[1], "--dtypes", "fp32",   # bf16: `ochre bench`
                             "--runs", str(cfg["bench_runs"]), "--warmup", str(cfg["bench_warmup"]), "--out",
                             str(result)], own_process=True)
    return json.loads(result.read_text())


def run(args) -> int:
    from ochre.demo_report import write_report
    from ochre.models.lookup import remember_demo

    cfg = _settings(args)
    compare = args.compare
    if compare is not None and compare not in COMPARE:
        print(f"ochre demo: --compare takes {', '.join(COMPARE)}, not {compare!r}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src, clips, tok, tokens = out / "recordings", out / "clips", out / "tokenizer", out / "tokens"
    world, eval_dir = out / "world", out / "eval"
    world2 = out / "test_world"
    src2, clips2, tokens2 = world2 / "recordings", world2 / "clips", world2 / "tokens"
    stages = _Stages()
    t0 = time.perf_counter()
    if args.world == "luanti":          # the second world: another map seed of the same game
        stages.run("record", ["record", "luanti", str(src), "--episodes", str(cfg["episodes"]), "--steps",
                              str(cfg["steps"]), "--seed", str(args.seed)])
        stages.run("record", ["record", "luanti", str(src2), "--episodes", str(cfg["world2_episodes"]), "--steps",
                              str(cfg["steps"]), "--seed", str(args.seed + WORLD2_SEED)])
    else:
        stages.run("synth", ["synth", str(src), "--episodes", str(cfg["episodes"]), "--steps", str(cfg["steps"]),
                             "--seed", str(args.seed)])
        stages.run("synth", ["synth", str(src2), "--episodes", str(cfg["world2_episodes"]), "--steps",
                             str(cfg["steps"]), "--seed", str(args.seed + WORLD2_SEED)])
    stages.run("prepare", ["prepare", str(src), str(clips)])
    stages.run("prepare", ["prepare", str(src2), str(clips2)])
    stages.run("data_check", ["data", "check", str(clips)])
    stages.run("train_tokenizer", ["train-tokenizer", str(clips), "--out", str(tok), "--preset", "tiny",
                                   "--seed", str(args.seed), "--resume", "--steps", str(cfg["tokenizer_steps"])])
    stages.run("tokenize", ["tokenize", str(clips), "--tokenizer", str(tok), "--out", str(tokens)])
    stages.run("tokenize", ["tokenize", str(clips2), "--tokenizer", str(tok), "--out", str(tokens2)])

    def train(name: str, run_dir: Path, recipe: str) -> None:
        argv = ["train", str(tokens), "--out", str(run_dir), "--preset", "tiny", "--recipe", recipe, "--seed",
                str(args.seed), "--resume", "--minutes", str(cfg["world_minutes"]), "--steps", str(cfg["world_steps"])]
        if args.quick:
            argv += ["--batch", "4", "--ckpt-every", "10", "--log-every", "5"]
        elif compile_pays(pick_device()):
            # Compiled: more predicted frames/s than eager once compiled (one graph for every unroll
            # length; compiling takes ~1-2 min of the budget where it pays, ~4 on an AVX2-only CPU, where
            # it does not); --quick's one minute cannot afford it either.
            argv += ["--compile"]
        stages.run(name, argv)

    train("train", world, "ochre")
    other = out / f"world-{compare}" if compare else None
    if compare:                          # the same tokens, seed and budget: the recipe is the only difference
        train(f"train_{compare.replace('-', '_')}", other, compare)
    if _eval_is_current(eval_dir, world, compare, cfg):
        stages.skip("eval", str(eval_dir / "metrics.json"))
    else:
        stages.run("eval", ["eval", str(world), str(tokens), "--out", str(eval_dir), "--test-world", str(tokens2),
                            "--rollouts", str(cfg["rollouts"]), "--long-rollouts", str(cfg["long_rollouts"]),
                            "--seeds", *map(str, cfg["seeds"]), "--tours", str(cfg["tours"]), "--world-tours",
                            str(cfg["world_tours"]), "--learned-short", "--calibrate",
                            "--idm-steps", str(cfg["idm_steps"]),
                            *(["--compare", str(other)] if compare else [])])
    remember_demo(out)                   # `ochre play` and `ochre bench` now default to this model
    bench = _live_stages(stages, cfg, out, world, args.seed)

    metrics = {**json.loads((tok / "metrics.json").read_text()), **json.loads((eval_dir / "metrics.json").read_text())}
    metrics["tokenizer_train_frames_per_s"] = _median_log(tok, "frames_per_s")
    metrics["train_frames_per_s"] = _median_log(world, "frames_per_s")
    if compare:
        metrics[f"{compare}/train_frames_per_s"] = _median_log(other, "frames_per_s")
    metrics["train_steps"] = metrics.pop("step")
    metrics["decode_frames_per_s"] = max(r["fps"] for r in decode_bench(tok)["rows"])
    stages.timings["total"] = round(time.perf_counter() - t0, 2)
    report = {"world": args.world, "metrics": metrics, "bench": bench, "timings_s": stages.timings}
    if args.world == "luanti":
        report["skipped"] = {"tours": TOURS_SKIPPED}
        print(f"tours: skipped ({TOURS_SKIPPED})", file=sys.stderr)
    write_json_atomic(out / "report.json", report)
    write_report(out, report, command=_command(args))
    print(json.dumps({"metrics": metrics, "timings_s": stages.timings}, indent=2))
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}; dreams in {eval_dir / 'dream.mp4'}, PSNR plot in "
          f"{eval_dir / 'psnr.png'}, headless play in {out / 'play' / 'dream.mp4'}, speed table in {out / 'bench'}")
    return 0


def _command(args) -> str:
    """The command line that made this demo, for the report."""
    flags = [f"--out {args.out}"] + (["--quick"] if args.quick else [])
    flags += [f"--world {args.world}"] if args.world != "synth" else []
    flags += [f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list | tuple) else v}"
              for k, v in vars(args).items() if k in DEFAULTS and v is not None]
    flags += [f"--compare {args.compare}"] if args.compare else []
    return "ochre demo " + " ".join(flags + ([f"--seed {args.seed}"] if args.seed else []))


def _median_log(run_dir: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    values = sorted(r[key] for r in rows if key in r)
    return values[len(values) // 2] if values else 0.0
