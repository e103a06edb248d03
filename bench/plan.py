"""The GPU session's plan (`python -m ochre.bench --device cuda`): which steps run, at which sizes,
and how long each should take on an H100, so that the whole plan fits the 8 minutes a session
gives it with margin; and the same steps at toy sizes for a dry run on any machine (`--dry-run`).

Steps run in order, one worker process per stage (bench/runner.py), each saving its rows the moment
they are measured (bench/rows.py). The cheaper steps come first: an estimate that proves wrong
then costs the fewest rows. Steps in OPTIONAL run only when named with --only.

Estimates: seconds on an H100 host (16 cores), compiles included. No step has run on a GPU yet, so
they are reasoned, not measured: compile times scaled from this project's CPU figures (dynamo
tracing the base world model's train step took 19 s on a 2-core CPU; three AOTInductor packages of
the tiny model compile in ~35 s there) with Triton's kernels compiled in parallel on 16 cores, and
timed calls capped by each row's budget. Each step's time limit is twice its estimate (at least a
minute); the session's budget stops the run as a whole. The first GPU run records every step's
`seconds` in its stage file: replace these with them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480                        # what a session may spend: 8 of the slot's ~15 minutes


@dataclass(frozen=True)
class Sizes:
    """Everything a step's size depends on; GPU and DRY below."""

    nc_rows: tuple[int, ...]          # nearest-code search: N
    nc_dims: tuple[int, ...]          # D
    codes: int                        # K
    dtypes: tuple[str, ...]           # kernel dtypes
    film_shapes: tuple[tuple[int, int], ...]   # FiLM-GRU step (B, C)
    row_budget_s: float               # timed calls per kernel row
    runs: dict | None                 # kernel/train timing loop bounds (None: the modules' defaults)
    tokenizer: tuple[str, int]        # tokenizer train step: preset, batch
    train: dict = field(default_factory=dict)   # WorldTrainConfig overrides (a dry run's short window)
    train_batch: int | None = None    # world-model train batch (None: the preset's)
    train_budget_s: float = 2.0
    live_batches: tuple[int, int] = (1, 64)
    live_runs: tuple[int, int, int] = (200, 20, 4)    # timed steps, warm-up steps, rounds
    parity_steps: int = 8             # onnxruntime's parity rollout on the GPU before it is timed


GPU = Sizes(nc_rows=(16384, 65536), nc_dims=(32, 64), codes=2048, dtypes=("float32", "bfloat16"),
            film_shapes=((16, 64), (64, 64), (64, 256)), row_budget_s=0.25, runs=None, tokenizer=("base", 128))
DRY = Sizes(nc_rows=(64,), nc_dims=(8,), codes=64, dtypes=("float32",), film_shapes=((2, 4),), row_budget_s=0.0,
            runs={"max_runs": 1, "min_runs": 1, "warmup": 0}, tokenizer=("tiny", 2),
            train={"window": 3, "unroll": 1}, train_batch=1, train_budget_s=0.0, live_batches=(1, 1),
            live_runs=(4, 1, 1), parity_steps=2)    # live: one batch twice, so one set of exports serves both


class Context:
    """What a step gets: where it runs, at which sizes, and where its rows go; the live steps' model
    (`checkpoint`, default the shipped one) and export folders made beforehand (`exports`)."""

    def __init__(self, device: str, sizes: Sizes, dry: bool, emit: Callable[[dict], None],
                 note: Callable[..., None], log: Callable[[str], None] = print, checkpoint: str | None = None,
                 exports: tuple[str, ...] = ()):
        self.device, self.sizes, self.dry, self.emit, self.note, self.log = device, sizes, dry, emit, note, log
        self.checkpoint, self.exports = checkpoint, tuple(exports)

    def dtypes(self):
        import torch

        return tuple(getattr(torch, d) for d in self.sizes.dtypes)

    def model(self):
        """The model the live steps play: `checkpoint`, else the one shipped in the package (the same
        on every machine)."""
        from ochre.models.lookup import from_run, shipped

        return from_run(self.checkpoint) if self.checkpoint else shipped()

    def folders(self, model) -> dict:
        """The export folders given, by (format, batch, dtype), each checked to be `model`'s: ONNX
        exports made on any machine before a session save it their minutes."""
        from ochre.runtime.bench import export_folders

        onnx = [d for d in self.exports if (Path(d) / "step.onnx").is_file()]
        return export_folders(model, onnx=onnx, aoti=[d for d in self.exports if d not in onnx])


@dataclass(frozen=True)
class Step:
    id: str
    stage: str
    what: str
    seconds: float                    # estimate on an H100, compiles included
    run: Callable[[Context], None]
    limit_s: float | None = None      # default: twice the estimate, at least a minute

    @property
    def limit(self) -> float:
        return self.limit_s if self.limit_s is not None else max(60.0, 2 * self.seconds)


# ---- the steps ---------------------------------------------------------------------------------

def _kernel_tests(ctx: Context) -> None:
    """tests/kernels on the device: compiled Triton against the references, a row per test as it
    finishes (bench/test_rows.py), then a summary; no -x: one failure must not hide the others. A
    dry run collects them (interpreted) instead."""
    if not (ROOT / "tests" / "kernels").is_dir():
        raise FileNotFoundError(f"{ROOT / 'tests' / 'kernels'}: not a source checkout, no kernel tests to run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "pytest", "tests/kernels", "-q", "-p", "no:cacheprovider"]
    if ctx.dry:
        env["TRITON_INTERPRET"] = "1"             # collected as the CPU's interpreted run collects them
        out = subprocess.run([*cmd, "--collect-only"], cwd=ROOT, env=env, capture_output=True, text=True)
        found = re.search(r"(\d+) tests? collected", out.stdout)
        if out.returncode != 0 or not found:
            raise RuntimeError(f"collecting tests/kernels failed (exit {out.returncode}): {out.stdout[-500:]}")
        ctx.emit({"collected": int(found.group(1))})
        return
    with tempfile.TemporaryDirectory() as tmp:
        env["OCHRE_TEST_ROWS"] = rows = str(Path(tmp) / "rows.jsonl")
        proc = subprocess.Popen([*cmd, "-p", "ochre.bench.test_rows"], cwd=ROOT, env=env)
        outcomes = follow_rows(proc, rows, ctx.emit)
    counts = {k: outcomes.count(k) for k in ("passed", "failed", "skipped")}
    ctx.emit({"tests": len(outcomes), **counts, "pytest_exit": proc.returncode})


def follow_rows(proc, path, emit, poll_s: float = 0.5) -> list[str]:
    """Emit each JSON line `proc` appends to `path` as it appears, until it exits; the outcomes."""
    done, outcomes = 0, []
    while True:
        ended = proc.poll() is not None
        text = Path(path).read_text() if Path(path).is_file() else ""
        lines = text[:text.rfind("\n") + 1].splitlines()          # whole lines only: one may be half written
        for line in lines[done:]:
            row = json.loads(line)
            outcomes.append(row["outcome"])
            emit(row)
        done = len(lines)
        if ended:
            return outcomes
        time.sleep(poll_s)


def _nearest_code(ctx: Context) -> None:
    from ochre.bench.kernels import nearest_code_section

    s = ctx.sizes
    nearest_code_section(ctx.device, s.nc_rows, s.nc_dims, ctx.dtypes(), s.row_budget_s, ctx.emit, s.codes, s.runs)


def _film_gru(ctx: Context) -> None:
    from ochre.bench.kernels import film_gru_section

    s = ctx.sizes
    film_gru_section(ctx.device, s.film_shapes, ctx.dtypes(), s.row_budget_s, ctx.emit, s.runs)


def _tokenizer_train(ctx: Context) -> None:
    from ochre.bench.kernels import bench_tokenizer_train

    preset, batch = ctx.sizes.tokenizer
    bench_tokenizer_train(ctx.device, preset, batch, ctx.sizes.train_budget_s, ctx.emit, ctx.sizes.runs)


def _world_train(preset: str) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        from ochre.bench.train import bench_world_train

        s = ctx.sizes
        bench_world_train(ctx.device, preset, s.train_batch, s.train_budget_s, ctx.emit, s.runs, **s.train)
    return run


def _live(which: int, backends: tuple[str, ...]) -> Callable[[Context], None]:
    """`ochre bench`'s rows (runtime/bench.py) for live batch number `which` of the sizes."""
    def run(ctx: Context) -> None:
        from ochre.models.checkpoint import checkpoint_hash
        from ochre.runtime.bench import available_backends, run_bench

        model = ctx.model()
        here = [b for b in backends if b in available_backends(ctx.device)]
        runs, warmup, rounds = ctx.sizes.live_runs
        result = run_bench(model, backends=here, batches=[ctx.sizes.live_batches[which]], device=ctx.device,
                           runs=runs, warmup=warmup, rounds=rounds, dtypes=["fp32"], folders=ctx.folders(model),
                           log=ctx.log, emit=ctx.emit, parity_steps=ctx.sizes.parity_steps)
        ctx.note(model=model.label, world_hash=checkpoint_hash(model.world), math=result["math"],
                 threads=result["threads"], runs=runs, warmup=warmup, rounds=rounds, what=result["what"])
    return run


LIVE = ("torch", "compiled", "onnxruntime", "tensorrt")

PLAN = [
    Step("kernel_tests", "kernel_tests", "tests/kernels on the device: compiled Triton vs the torch references",
         40, _kernel_tests),
    Step("kernels/nearest_code", "kernels", "nearest-code search, K=2048, N 16k/64k, D 32/64, fp32/bf16: "
         "Triton vs torch (compiled once per dtype)", 30, _nearest_code),
    Step("kernels/film_gru", "kernels", "fused FiLM-GRU step fwd+bwd at the models' (B, C), fp32/bf16: "
         "Triton vs torch", 25, _film_gru),
    Step("live/b1", "live", "live step + decode at batch 1: torch, compiled (CUDA graphs), onnxruntime "
         "(CUDA with onnxruntime-gpu, its parity rerun there)", 40, _live(0, LIVE)),
    Step("live/b64", "live", "live step + decode at batch 64: torch, compiled, onnxruntime", 45, _live(1, LIVE)),
    Step("train/tiny", "train", "world-model train step, tiny: eager vs compiled vs compiled + Triton "
         "(2 compiles with backward)", 65, _world_train("tiny")),
    Step("train/base", "train", "world-model train step, base (B 64, window 16): eager vs compiled vs "
         "compiled + Triton (2 compiles with backward)", 115, _world_train("base")),
    # Last: three AOTInductor compiles for the GPU, the least certain estimate of the plan.
    Step("native/b1", "native", "native at batch 1 beside torch: AOTInductor CUDA packages (3 compiles, "
         "parity on the GPU)", 70, _live(0, ("torch", "native"))),
]
OPTIONAL = [
    Step("native/b64", "native", "native at batch 64 beside torch: AOTInductor CUDA packages (3 compiles)", 70,
         _live(1, ("torch", "native"))),
    Step("kernels/tokenizer_train", "kernels", "tokenizer train step, base B 128: eager vs compiled vs "
         "compiled + Triton (2 compiles with backward)", 80, _tokenizer_train),
]
STAGES = tuple(dict.fromkeys(s.stage for s in PLAN))


def select(only: list[str] | None, plan: list[Step] | None = None, optional: list[Step] | None = None) -> list[Step]:
    """The plan, or the steps `only` names (a stage name takes the plan's steps of that stage; a
    step id any step, optional ones included), in plan order; raises ValueError on an unknown name.
    plan, optional: another plan's lists (default this module's)."""
    plan = PLAN if plan is None else plan
    every = plan + (OPTIONAL if optional is None else optional)
    if not only:
        return list(plan)
    stages = {s.stage for s in every}
    unknown = [n for n in only if n not in stages and n not in {s.id for s in every}]
    if unknown:
        stages = ", ".join(dict.fromkeys(s.stage for s in every))
        raise ValueError(f"unknown step or stage {', '.join(unknown)}; choose from the stages {stages} "
                         f"or the steps {', '.join(s.id for s in every)}")
    return [s for s in every if s.id in only or (s.stage in only and s in plan)]


def table(steps: list[Step], budget_s: float) -> str:
    """The plan as printed before a session starts: step, what, estimate, limit; and the total."""
    lines = [f"{'step':<24} {'est s':>6} {'limit s':>7}  what"]
    lines += [f"{s.id:<24} {s.seconds:>6.0f} {s.limit:>7.0f}  {s.what}" for s in steps]
    total = sum(s.seconds for s in steps)
    lines.append(f"{'total':<24} {total:>6.0f} {'':>7}  the session's budget is {budget_s:.0f} s "
                 f"({budget_s - total:.0f} s margin); estimates for an H100 (bench/plan.py says how they were made)")
    return "\n".join(lines)
