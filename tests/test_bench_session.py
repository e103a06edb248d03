"""The GPU session (`python -m ochre.bench`, docs/native.md#the-gpu-session): its plan fits the
budget and is printed first; its dry run walks every step on this CPU; rows survive a step that
overruns its limit, raises or takes its process down; result files carry the GPU's full name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ochre.bench import rows as rowlog
from ochre.bench.plan import BUDGET_S, OPTIONAL, PLAN, follow_rows, select, table
from ochre.bench.runner import run_plan

TESTS = Path(__file__).resolve().parent


def test_the_plan_fits_its_budget_with_margin_and_is_printed_first(capsys):
    from ochre.bench.__main__ import main

    assert sum(s.seconds for s in PLAN) <= 0.9 * BUDGET_S
    assert {s.stage for s in PLAN} == {"kernel_tests", "kernels", "live", "train", "native"}
    assert main(["--plan-only"]) == 0
    out = capsys.readouterr().out
    assert all(s.id in out for s in PLAN) and "total" in out and f"{BUDGET_S} s" in out
    assert [s.id for s in select(["live"])] == ["live/b1", "live/b64"]                     # a stage
    assert [s.id for s in select(["train/base", "kernels/tokenizer_train"])] == ["train/base",
                                                                                 "kernels/tokenizer_train"]
    with pytest.raises(ValueError, match="unknown step or stage nope"):
        select(["nope"])
    with pytest.raises(SystemExit):                    # the session is a GPU's: the CPU only dry-runs it
        main(["--device", "cpu"])
    assert "total" in table(OPTIONAL, BUDGET_S)


def test_rows_survive_timeouts_errors_and_crashes_and_a_rerun_continues(tmp_path, monkeypatch):
    """A step past its limit is killed and keeps the rows it measured; one that raises a plain
    Exception subclass, or kills its process, leaves an error row; the steps after each still run."""
    import session_plan

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    summary = run_plan(session_plan.PLAN, "cpu", tmp_path, plan="session_plan", log=lambda m: None)
    status = {sid: e["status"] for sid, e in summary["steps"].items()}
    assert status == {"one/measures": "done", "one/overruns": "timeout", "one/after": "done",
                      "two/raises": "error", "two/crashes": "crashed", "two/after": "done"}
    one, two = (rowlog.read(tmp_path / summary["steps"][f"{s}/after"]["file"]) for s in ("one", "two"))
    rows = [(r["step"], r.get("variant") or r["error"]) for r in one["rows"] + two["rows"]]
    assert ("one/overruns", "before the limit") in rows and ("two/raises", "before the error") in rows
    assert ("two/crashes", "before the crash") in rows
    errors = {r["step"]: r["error"] for r in one["rows"] + two["rows"] if "error" in r}
    assert errors["one/overruns"].startswith("timeout: still running after") and "limit 20 s" in errors["one/overruns"]
    assert errors["two/raises"] == "Boom: the backend broke"
    assert "exit 3" in errors["two/crashes"]
    assert summary["steps"]["two/raises"]["error"] == "Boom: the backend broke"
    # Again: what is done stays (not re-measured); what was cut short runs again.
    started = one["steps"]["one/measures"]["started"]
    again = run_plan(session_plan.PLAN[:3], "cpu", tmp_path, plan="session_plan", log=lambda m: None)
    assert again["steps"]["one/overruns"]["status"] == "timeout"
    assert rowlog.read(tmp_path / again["steps"]["one/after"]["file"])["steps"]["one/measures"]["started"] == started
    out = run_plan(session_plan.PLAN[:1], "cpu", tmp_path, budget_s=0, fresh=True, plan="session_plan",
                   log=lambda m: None)
    assert out["steps"]["one/measures"]["status"] == "not run"        # no budget: a row saying so


def test_a_stage_file_is_rewritten_row_by_row_and_started_afresh_for_other_code(tmp_path):
    path = tmp_path / "s.json"
    head = {"device": "cpu", "git_sha": "abc"}
    log = rowlog.StageLog(path, head, "s")
    log.begin("x")
    log.add("x", {"v": 1})
    assert rowlog.read(path)["rows"] == [{"step": "x", "v": 1}] and log.status("x") == "running"
    log.end("x", "done")
    log.begin("x")                                      # running a step again drops its old rows
    assert rowlog.read(path)["rows"] == [] and not list(tmp_path.glob("*.tmp"))
    log.end("x", "error", "E: no")
    assert rowlog.StageLog(path, head, "s").status("x") == "error"
    assert rowlog.StageLog(path, {**head, "git_sha": "def"}, "s").status("x") is None
    with pytest.raises(ValueError, match="a step ends"):
        log.end("x", "finished")


def test_each_kernel_test_is_a_row_the_moment_it_finishes(tmp_path):
    """The kernel-test step's pytest plugin and follower: a row per test as it ends (so a run its time
    limit kills keeps what it reached), failures with their E line."""
    (tmp_path / "test_some.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "def test_bad(): assert 3 < 2, 'three is not less'\n"
        "@pytest.mark.skip(reason='no GPU')\n"
        "def test_skipped(): pass\n")
    env = {**os.environ, "OCHRE_TEST_ROWS": str(tmp_path / "rows.jsonl")}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "ochre.bench.test_rows", "-p",
                             "no:cacheprovider", str(tmp_path / "test_some.py")], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL)
    rows = []
    outcomes = follow_rows(proc, tmp_path / "rows.jsonl", rows.append, poll_s=0.05)
    assert outcomes == ["passed", "failed", "skipped"]
    assert rows[1]["test"].endswith("test_bad") and rows[1]["error"].startswith("AssertionError: three is not less")


def test_result_files_are_named_by_the_full_device_name(monkeypatch):
    import ochre.measure as measure
    from ochre.bench.common import result_path
    from ochre.runtime.bench import default_out

    monkeypatch.setattr(measure, "device_name", lambda device="cpu": "NVIDIA H100 80GB HBM3")
    assert measure.device_tag("cuda") == "nvidia-h100-80gb-hbm3" and measure.device_tag("cpu") == "cpu"
    assert result_path("gpu", "cuda").name.startswith("gpu_nvidia-h100-80gb-hbm3_")
    assert default_out("cuda").name.startswith("live_nvidia-h100-80gb-hbm3_")


def test_the_gpu_plan_dry_runs_every_step_on_the_cpu(live_world, onnx_b1, aoti_b1, tmp_path):
    """CI's dry run of `python -m ochre.bench --device cuda`: every step of the plan at toy sizes,
    compiles traced by dynamo only, the live steps on exports made beforehand (as a session can)."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "ochre.bench", "--dry-run", "--device", "cpu", "--results",
                        str(tmp_path), "--checkpoint", str(live_world), "--exports", str(onnx_b1), str(aoti_b1)],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-4000:]
    summary = json.loads(next(tmp_path.glob("dry_cpu_*.json")).read_text())
    assert {sid: e["status"] for sid, e in summary["steps"].items()} == {s.id: "done" for s in PLAN}
    rows = {stage: rowlog.read(next(tmp_path.glob(f"{stage}_dry_cpu_*.json")))["rows"]
            for stage in ("kernel_tests", "kernels", "live", "train", "native")}
    assert all("error" not in row for stage in rows.values() for row in stage), rows
    assert rows["kernel_tests"][0]["collected"] >= 140
    timed = {(r["step"], r.get("variant") or r.get("backend")) for stage in rows.values() for r in stage
             if "ms_p50" in r or "fps" in r}
    for step, variants in {"kernels/nearest_code": ("reference", "matmul", "cdist_exact", "compiled_ref"),
                           "kernels/film_gru": ("film_gru/reference", "film_gru/compiled_ref"),
                           "train/tiny": ("world_train/eager", "world_train/compiled", "world_train/compiled+op"),
                           "train/base": ("world_train/eager", "world_train/compiled", "world_train/compiled+op"),
                           "live/b1": ("torch", "compiled", "onnxruntime"),
                           "live/b64": ("torch", "compiled", "onnxruntime"), "native/b1": ("torch", "native")}.items():
        assert {(step, v) for v in variants} <= timed, (step, timed)
    ort = next(r for r in rows["live"] if r["backend"] == "onnxruntime")
    assert ort["providers"] == ["CPUExecutionProvider"] and ort["runs_on"] == "cpu"
    print(f"dry run: {time.time() - t0:.0f} s")
