"""End to end: `ochre demo` on the synthetic world, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "ochre", "demo", "--out", str(out), "--episodes", "6", "--steps", "200",
           "--tokenizer-steps", "30"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"metrics", "bench", "timings_s"}
    assert set(report["timings_s"]) == {"synth", "prepare", "data_check", "train_tokenizer", "tokenize", "total"}
    m = report["metrics"]
    for name in ("recon_psnr", "codebook_perplexity", "train_frames_per_s", "decode_frames_per_s"):
        assert m[name] > 0, name
    bench = report["bench"]
    assert {"device", "git_sha", "versions", "rows"} <= set(bench)
    assert all({"backend", "batch", "fps", "step_ms_p50", "step_ms_p99"} <= set(row) for row in bench["rows"])
    assert (out / "tokenizer" / "recon.png").is_file() and (out / "tokens" / "index.json").is_file()
    # A rerun resumes every stage instead of redoing it: no recording, shard or checkpoint is
    # rewritten, the indexes rebuilt from the manifests come out byte for byte the same, and no
    # training step is taken (a timing bound could not tell a redo from a resume).
    def written():
        return {p: p.read_bytes() if p.suffix == ".json" else p.stat().st_mtime_ns
                for folder in ("recordings", "clips", "tokens", "tokenizer/checkpoints")
                for p in (out / folder).rglob("*") if p.is_file()}
    before, log = written(), (out / "tokenizer" / "log.jsonl").read_text()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert written() == before
    assert (out / "tokenizer" / "log.jsonl").read_text() == log
    assert "0 episodes written" in r.stdout and "nothing to do" in r.stdout
    assert "resuming from" in r.stderr and "at step 30" in r.stderr


@pytest.mark.slow
def test_demo_tokenizer_meets_the_quality_bar(tmp_path):
    """The default demo (32 episodes, tiny tokenizer, 1000 steps: ~5 min on 2 cores) must give
    held-out recon_psnr >= 25 dB with at least half of the 2048 codes in use."""
    r = subprocess.run([sys.executable, "-m", "ochre", "demo", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "demo" / "report.json").read_text())["metrics"]
    assert m["recon_psnr"] >= 25.0, m
    assert m["codebook_usage"] >= 0.5, m
    assert m["eval_frames"] >= 128, m
