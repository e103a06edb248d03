"""Runs a plan's steps (bench/plan.py) so that a GPU time slot keeps what it measured.

One worker process per stage runs its steps in order; each step's rows land in the stage's result
file the moment they are measured (bench/rows.py). The parent watches that file: a step that runs
past its limit, or past the session's budget, has its worker killed (the whole process group:
pytest, compile workers) and gets a "timeout" row; a worker that dies (a segfault, a CUDA error
that kills the process) leaves a "crashed" row with the last lines it printed. Either way a new
worker runs the stage's remaining steps, and the later stages run as planned. Steps a rerun finds
"done" in today's files (same git SHA, same device) are skipped unless `fresh`, so a session cut
short continues where it stopped.

    python -m ochre.bench.runner --stage S --steps ID ... --device D --out FILE [--dry]   (the worker)
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ochre.bench import rows as rowlog
from ochre.bench.plan import DRY, GPU, Context, Step, select

PLAN_MODULE = "ochre.bench.plan"      # where workers find the steps by id (a test passes its own)

POLL_S = 0.5
START_LIMIT_S = 180          # a worker that starts no step within this (imports, CUDA init) is stuck


def stage_path(results: Path, stage: str, device: str, dry: bool) -> Path:
    from ochre.bench.common import result_path

    return result_path(f"{stage}_dry" if dry else stage, device, root=results)


def stage_header(device: str, dry: bool) -> dict:
    from ochre.bench.common import header

    return {**header(device), "device_kind": device, "plan": "dry run" if dry else "gpu session"}


# ---- the parent --------------------------------------------------------------------------------

class _Worker:
    """A worker process for one stage, its output streamed to ours and its last lines kept."""

    def __init__(self, stage: str, steps: list[Step], device: str, dry: bool, path: Path, opts: dict):
        cmd = [sys.executable, "-m", "ochre.bench.runner", "--stage", stage, "--device", device, "--out", str(path),
               "--steps", *[s.id for s in steps], "--plan", opts.get("plan", PLAN_MODULE), *(["--dry"] if dry else [])]
        if opts.get("checkpoint"):
            cmd += ["--checkpoint", str(opts["checkpoint"])]
        if opts.get("exports"):
            cmd += ["--exports", *map(str, opts["exports"])]
        # Its own session: a kill takes its children (pytest, compile workers) with it.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._reader = threading.Thread(target=self._copy, daemon=True)
        self._reader.start()

    def _copy(self) -> None:
        for line in self.proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            self.tail.append(line.rstrip())

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def finish(self) -> int:
        rc = self.proc.wait()
        self._reader.join(timeout=5)
        return rc


def _watch(worker: _Worker, path: Path, steps: list[Step], deadline: float) -> tuple[str, str] | None:
    """Wait for the worker; kill it when its running step passes its limit or the session its
    deadline, or when it starts no step for START_LIMIT_S. Returns (status, reason) for the step
    it was killed in (None: it ended by itself)."""
    limits = {s.id: s.limit for s in steps}
    quiet_since = time.time()
    while worker.proc.poll() is None:
        time.sleep(POLL_S)
        now = time.time()
        entries = rowlog.read(path).get("steps", {})
        running = [(sid, e) for sid, e in entries.items() if sid in limits and e.get("status") == "running"]
        if running:
            sid, entry = running[0]
            quiet_since = now
            ran = now - entry.get("started", now)
            if ran > limits[sid]:
                worker.kill()
                return "timeout", f"timeout: still running after {ran:.0f} s (limit {limits[sid]:.0f} s)"
            if now > deadline:
                worker.kill()
                return "timeout", f"timeout: the session's budget ran out after {ran:.0f} s of this step"
        elif now > deadline:
            worker.kill()
            return "not run", "not run: the session's budget was spent"
        elif now - quiet_since > START_LIMIT_S:
            worker.kill()
            return "crashed", f"the worker started no step for {now - quiet_since:.0f} s"
    return None


def run_stage(stage: str, steps: list[Step], device: str, dry: bool, path: Path, deadline: float,
              opts: dict | None = None) -> None:
    """Run `steps` (all of `stage`) in workers until each has a final status or time is up; `opts`:
    the live steps' model and export folders, and the plan module ({"checkpoint", "exports", "plan"})."""
    header = stage_header(device, dry)
    todo = list(steps)
    while todo:
        if time.time() >= deadline:
            log = rowlog.StageLog(path, header, stage)
            for s in todo:
                log.end(s.id, "not run", f"not run: the session's budget was spent; rerun with --only {s.id}")
            return
        worker = _Worker(stage, todo, device, dry, path, opts or {})
        killed = _watch(worker, path, todo, deadline)
        rc = worker.finish()
        log = rowlog.StageLog(path, header, stage)
        tail = " | ".join(list(worker.tail)[-5:])
        running = [s for s in todo if log.status(s.id) == "running"]
        if running:
            status, reason = killed or ("crashed", f"the worker died (exit {rc}): {tail}")
            log.end(running[0].id, status, reason)
        elif killed and killed[0] == "not run":
            pass                                      # the deadline check above marks what is left
        elif killed or rc != 0:
            pending = next(s for s in todo if log.status(s.id) not in rowlog.FINAL)
            log.end(pending.id, "crashed", (killed[1] if killed else f"the worker died (exit {rc})") + f": {tail}")
        todo = [s for s in todo if log.status(s.id) not in rowlog.FINAL]


def run_plan(steps: list[Step], device: str, results: Path, *, dry: bool = False, fresh: bool = False,
             budget_s: float = 480.0, checkpoint=None, exports=(), plan: str = PLAN_MODULE, log=print) -> dict:
    """Every stage of `steps` in plan order within `budget_s`; returns the session summary
    ({step id: {"stage", "status", "seconds", "file"}}) after writing it beside the stage files.
    checkpoint, exports: the live steps' model (default: the shipped one) and export folders of it;
    plan: the module that defines `steps` (its workers look them up there by id)."""
    from ochre.bench.common import result_path
    from ochre.io import write_json_atomic

    t0 = time.time()
    deadline = t0 + budget_s
    header = stage_header(device, dry)
    stages = list(dict.fromkeys(s.stage for s in steps))
    files = {stage: stage_path(results, stage, device, dry) for stage in stages}
    for stage in stages:
        mine = [s for s in steps if s.stage == stage]
        old = rowlog.StageLog(files[stage], header, stage)
        todo = [s for s in mine if fresh or old.status(s.id) != "done"]
        for s in mine:
            if s not in todo:
                log(f"== {s.id}: done in an earlier run of this code today ({files[stage].name}); --fresh redoes it")
        if todo:
            log(f"== stage {stage}: {', '.join(s.id for s in todo)} -> {files[stage]}")
            run_stage(stage, todo, device, dry, files[stage], deadline,
                      {"checkpoint": checkpoint, "exports": list(exports), "plan": plan})
    summary = {"benchmark": "gpu-session" if not dry else "dry-run", **header, "budget_s": budget_s,
               "seconds": round(time.time() - t0, 1), "steps": {}}
    for s in steps:
        entry = rowlog.read(files[s.stage]).get("steps", {}).get(s.id, {})
        summary["steps"][s.id] = {"stage": s.stage, "status": entry.get("status", "not run"),
                                  "seconds": entry.get("seconds"), "estimate_s": s.seconds,
                                  "file": files[s.stage].name}
        if "error" in entry:
            summary["steps"][s.id]["error"] = entry["error"]
    out = result_path("gpu" if not dry else "dry", device, root=results)
    write_json_atomic(out, summary)
    log(f"wrote {out}")
    return summary


# ---- the worker --------------------------------------------------------------------------------

def _dynamo_only() -> None:
    """A dry run traces every torch.compile with dynamo and runs the captured graphs eagerly: the
    compiled code paths and their graph breaks (fullgraph=True) are checked, without the minutes
    Inductor spends generating code on a CPU. Only in a dry run's worker process."""
    import torch

    real = torch.compile

    def compile_eager(model, *, fullgraph: bool = False, dynamic=None, **_inductor_options):
        return real(model, backend="eager", fullgraph=fullgraph, dynamic=dynamic)
    torch.compile = compile_eager


def work(stage: str, ids: list[str], device: str, out: Path, dry: bool, checkpoint: str | None = None,
         exports: tuple[str, ...] = (), plan: str = PLAN_MODULE) -> int:
    """Run the named steps of `stage` (found in the module `plan`) in this process, saving each row
    as it comes."""
    module = importlib.import_module(plan)
    steps = [s for s in select(ids, module.PLAN, getattr(module, "OPTIONAL", [])) if s.stage == stage]
    from ochre.models.precision import strict_fp32

    log = rowlog.StageLog(out, stage_header(device, dry), stage)
    log.note(math=strict_fp32(device))      # every fp32 row on a GPU is fp32, not TF32; the header says so
    if dry:
        _dynamo_only()
    current: list[str] = []
    ctx = Context(device, DRY if dry else GPU, dry, emit=lambda row: log.add(current[-1], row),
                  note=lambda **fields: log.note(**fields), log=lambda m: print(m, flush=True),
                  checkpoint=checkpoint, exports=exports)
    for step in steps:
        current.append(step.id)
        print(f"== {step.id}: {step.what}", flush=True)
        log.begin(step.id)
        try:
            step.run(ctx)
        # Any failure of a step is its row; the next step runs (a crash of the process is the parent's).
        except Exception as e:
            line = (str(e).strip().splitlines() or [""])[0]
            log.end(step.id, "error", f"{type(e).__name__}: {line}"[:500])
            print(f"== {step.id}: failed: {type(e).__name__}: {line}", flush=True)
            continue
        log.end(step.id, "done")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ochre.bench.runner",
                                 description="one stage of a benchmark session (started by python -m ochre.bench)")
    ap.add_argument("--stage", required=True)
    ap.add_argument("--steps", nargs="+", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--dry", action="store_true")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--exports", nargs="+", default=())
    ap.add_argument("--plan", default=PLAN_MODULE, help="the module whose PLAN and OPTIONAL hold the steps")
    args = ap.parse_args(argv)
    return work(args.stage, args.steps, args.device, args.out, args.dry, args.checkpoint, tuple(args.exports),
                args.plan)


if __name__ == "__main__":
    sys.exit(main())
