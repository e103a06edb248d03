"""End to end: `ochre demo` on the synthetic world, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_quick_demo_runs_every_stage_and_reports(tmp_path):
    """`ochre demo --quick`: every stage small (CI runs it; about 2 minutes on 2 cores)."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "ochre", "demo", "--out", str(out), "--quick"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"metrics", "bench", "timings_s"}
    assert set(report["timings_s"]) == {"synth", "prepare", "data_check", "train_tokenizer", "tokenize", "train",
                                        "eval", "total"}
    m = report["metrics"]
    for name in ("recon_psnr", "codebook_perplexity", "train_frames_per_s", "decode_frames_per_s", "psnr@1",
                 "psnr@8", "repeat_frame/psnr@8", "code_usage@256", "grad_ratio@256"):
        assert m[name] > 0, name
    for name in ("delta_psnr@16", "yaw_response", "real/yaw_response"):
        assert name in m, name
    bench = report["bench"]
    assert {"device", "git_sha", "versions", "rows"} <= set(bench)
    assert all({"backend", "batch", "fps", "step_ms_p50", "step_ms_p99"} <= set(row) for row in bench["rows"])
    for name in ("metrics.json", "rollouts.npz", "dream.mp4", "psnr.png"):
        assert (out / "eval" / name).is_file(), name
    assert (out / "tokenizer" / "recon.png").is_file() and (out / "tokens" / "index.json").is_file()
    # A rerun resumes every stage instead of redoing it: no recording, shard, checkpoint or eval
    # file is rewritten, the JSON indexes (rebuilt from the shard manifests) come out byte-identical,
    # and no training step is taken (a timing bound could not tell a redo from a resume).
    def written():
        return {p: p.read_bytes() if p.suffix == ".json" else p.stat().st_mtime_ns
                for folder in ("recordings", "clips", "tokens", "tokenizer/checkpoints", "world/checkpoints", "eval")
                for p in (out / folder).rglob("*") if p.is_file()}
    before = written()
    logs = {run: (out / run / "log.jsonl").read_text() for run in ("tokenizer", "world")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert written() == before
    assert {run: (out / run / "log.jsonl").read_text() for run in logs} == logs
    assert "0 episodes written" in r.stdout and "nothing to do" in r.stdout
    assert "resuming from" in r.stderr and "at step 30" in r.stderr
    assert "world model: already complete" in r.stderr and "eval: already complete" in r.stderr


@pytest.mark.slow
def test_demo_data_and_tokenizer_meet_the_quality_bar(tmp_path):
    """The default demo's data and tokenizer (64 episodes, tiny tokenizer, 500 steps: ~3 min on 2
    cores) must give held-out recon_psnr >= 25 dB with at least half of the 2048 codes in use. The
    world model gets a 20-second budget here: its quality is measured by `ochre.bench.world` on a
    full demo run (bench/results/world_cpu_*.json), which takes 12 minutes by itself."""
    r = subprocess.run([sys.executable, "-m", "ochre", "demo", "--out", str(tmp_path / "demo"),
                        "--world-minutes", "0.33", "--rollouts", "8"],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "demo" / "report.json").read_text())["metrics"]
    assert m["recon_psnr"] >= 25.0, m
    assert m["codebook_usage"] >= 0.5, m
    assert m["eval_frames"] >= 128, m
    assert m["heldout_trajectories"] >= 3, m
