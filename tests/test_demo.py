"""End to end: `ochre demo` on the synthetic world, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest


def _report_links(out) -> list[str]:
    return re.findall(r"\]\(([^)]+)\)", (out / "report.md").read_text())


def test_quick_demo_runs_every_stage_and_reports(tmp_path):
    """`ochre demo --quick`: every stage small (CI runs it; about 2 minutes on 2 cores)."""
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "ochre", "demo", "--out", str(out), "--quick"]
    env = {**os.environ, "OCHRE_CACHE": str(tmp_path / "cache")}         # the demo becomes the default model there
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"world", "metrics", "bench", "timings_s"} and report["world"] == "synth"
    assert set(report["timings_s"]) == {"synth", "prepare", "data_check", "train_tokenizer", "tokenize", "train",
                                        "eval", "export", "play", "bench", "total"}
    m = report["metrics"]
    for name in ("recon_psnr", "codebook_perplexity", "train_frames_per_s", "decode_frames_per_s", "psnr@1",
                 "psnr@8", "repeat_frame/psnr@8", "code_usage@256", "grad_ratio@256"):
        assert m[name] > 0, name
    for name in ("delta_psnr@16", "yaw_response", "real/yaw_response"):
        assert name in m, name
    # Every docs/metrics.md family: intervals, learned/, the other world, tours, action accuracy,
    # realism and the calibration's reference dreamers.
    for name in ("psnr@8/ci", "learned/psnr@8", "test_world/psnr@8", "test_world/tour/turn_sign_acc",
                 "tour/turn_sign_acc", "tour/walk_sign_acc", "tour/strafe_sign_acc", "tour/turn_gain",
                 "tour/revisit_psnr", "tour/walk/psnr@16", "idm/real/acc_yaw", "idm/dream/acc_forward",
                 "idm/ratio_yaw", "c2st@1-8", "c2st@9-32", "c2st@129-256", "tokenizer/c2st", "oracle/psnr@8",
                 "still/tour/turn_sign_acc", "random_codes/c2st@9-32", "recon_grad_ratio", "psnr@8/over_repeat/ci",
                 "psnr@32/over_repeat", "test_world/psnr@8/over_repeat/ci"):
        assert name in m, name
    assert abs(m["psnr@8/over_repeat"] - (m["psnr@8"] - m["repeat_frame/psnr@8"])) < 1e-6
    # The demo's learned/ twin runs the short rollouts only (--learned-short): no 256-step rows.
    assert "grad_ratio@256" in m and "learned/grad_ratio@256" not in m and "learned/yaw_response" in m
    assert m["split"] == "test" and m["seeds"] == [0]
    # "bench" is the `ochre bench` JSON of the demo's exports: torch and onnxruntime at batch 1 in --quick.
    bench = report["bench"]
    assert bench == json.loads((out / "bench" / "live.json").read_text())
    assert {"device", "git_sha", "versions", "rows", "loadavg_before", "threads"} <= set(bench)
    assert all({"backend", "batch", "fps", "step_ms_p50", "step_ms_p99", "speedup_vs_torch"} <= set(row)
               for row in bench["rows"])
    assert {(row["backend"], row["batch"]) for row in bench["rows"]} == {("torch", 1), ("onnxruntime", 1)}
    play = json.loads((out / "play" / "stats.json").read_text())
    assert play["backend"] == "onnxruntime" and play["steps"] == 16 and play["fps"] > 0
    for name in ("metrics.json", "rollouts.npz", "tours.npz", "dream.mp4", "tour.mp4", "psnr.png"):
        assert (out / "eval" / name).is_file(), name
    assert (out / "tokenizer" / "recon.png").is_file() and (out / "tokens" / "index.json").is_file()
    # report.md: the metrics against repeating the frame, the speed table, the timings; every link resolves.
    md = (out / "report.md").read_text()
    for heading in ("## World model", "### A world never trained on", "## Tours against the renderer's truth",
                    "## Action accuracy", "## Realism", "## Calibration", "## Live play", "## Speed",
                    "## Stage timings", "#### Bars (the test split)", "#### Bars (this world)"):
        assert heading in md, heading
    assert "| psnr@8 |" in md and "| onnxruntime | 1 |" in md and "| bench |" in md
    links = _report_links(out)
    assert {"eval/psnr.png", "eval/dream.mp4", "eval/tour.mp4", "play/dream.mp4", "bench/live.png"} <= set(links)
    assert all((out / link).is_file() for link in links), links
    assert json.loads((tmp_path / "cache" / "last_demo.json").read_text())["out"] == str(out.resolve())
    # A rerun resumes every stage instead of redoing it: no recording, shard, checkpoint, eval, export,
    # play or bench file is rewritten, the JSON indexes (rebuilt from the shard manifests) come out
    # byte-identical, and no training step is taken (a timing bound could not tell a redo from a resume).
    def written():
        return {p: p.read_bytes() if p.suffix == ".json" else p.stat().st_mtime_ns
                for folder in ("recordings", "clips", "tokens", "tokenizer/checkpoints", "world/checkpoints", "eval",
                               "export", "play", "bench")
                for p in (out / folder).rglob("*") if p.is_file()}
    before = written()
    logs = {run: (out / run / "log.jsonl").read_text() for run in ("tokenizer", "world")}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert written() == before
    assert {run: (out / run / "log.jsonl").read_text() for run in logs} == logs
    assert "0 episodes written" in r.stdout and "nothing to do" in r.stdout
    assert "resuming from" in r.stderr and "at step 30" in r.stderr
    assert "world model: already complete" in r.stderr and "eval: already complete" in r.stderr
    for stage in ("export", "play", "bench"):
        assert f"== {stage}: already complete" in r.stderr, stage
    assert json.loads((out / "report.json").read_text())["bench"] == bench


@pytest.mark.slow
@pytest.mark.xfail(strict=False, raises=AssertionError, reason=(
    "known miss, near the bar: the default demo's tokenizer read recon_psnr 24.97 dB (bar 25) on 200 x 400 "
    "episodes at 500 steps in its last run"))
def test_demo_data_and_tokenizer_meet_the_quality_bar(tmp_path):
    """The default demo's data and tokenizer (200 episodes, tiny tokenizer, 500 steps) must give
    held-out recon_psnr >= 25 dB with at least half of the 2048 codes in use, and a test split of at
    least 8 trajectories. The world model gets a 20-second budget and the eval a small one here: the
    world model's quality is measured on a full demo run (bench/results/world_cpu_*.json)."""
    r = subprocess.run([sys.executable, "-m", "ochre", "demo", "--out", str(tmp_path / "demo"),
                        "--world-minutes", "0.33", "--rollouts", "8", "--long-rollouts", "2", "--seeds", "0",
                        "--tours", "4", "--idm-steps", "30"],
                       capture_output=True, text=True, timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path / "demo" / "report.json").read_text())["metrics"]
    assert m["recon_psnr"] >= 25.0, m
    assert m["codebook_usage"] >= 0.5, m
    assert m["eval_frames"] >= 128, m
    assert m["trajectories"] >= 8, m


def test_report_md_puts_a_comparison_recipe_beside_ochre_and_repeat_frame():
    from ochre.demo_report import compared_recipes, metrics_table

    m = {"psnr@8": 12.44, "seed-v3/psnr@8": 11.76, "repeat_frame/psnr@8": 13.22, "yaw_response": 0.97,
         "seed-v3/yaw_response": -0.056, "real/yaw_response": 0.916}
    assert compared_recipes(m) == ["seed-v3"]
    table = metrics_table({**m, "psnr@8/ci": [12.1, 12.8], "learned/psnr@8": 11.0})
    assert table.splitlines()[0].startswith("| metric | ochre [95 % interval] | learned (no boosts) | seed-v3 | "
                                            "repeat frame |")
    assert "| psnr@8 | 12.44 [12.10, 12.80] | 11.00 | 11.76 | 13.22 |" in table
    assert "| yaw_response | 0.970 | – | -0.056 | – |" in table and "real frames: 0.916" in table


def test_a_luanti_report_names_its_second_world_and_says_why_it_has_no_tours(tmp_path):
    from ochre.demo import TOURS_SKIPPED
    from ochre.demo_report import render

    report = {"metrics": {"psnr@8": 12.0, "test_world/psnr@8": 11.0}, "timings_s": {"eval": 1.0},
              "bench": {"device": "cpu", "threads": 2, "rows": []}, "world": "luanti",
              "skipped": {"tours": TOURS_SKIPPED}}
    md = render(tmp_path, report, "ochre demo --world luanti")
    assert "a second map of the same game (another map seed)" in md and "synthetic world (another" not in md
    assert f"Not run: tours ({TOURS_SKIPPED})." in md and "## Tours against" not in md
    synth = render(tmp_path, {**report, "world": "synth", "skipped": {}}, "ochre demo")
    assert "a second synthetic world (another world seed)" in synth and "## Tours against" in synth


def test_demo_help_states_the_defaults_it_runs():
    """`ochre demo --help` is parsed without importing torch, so its numbers are written out: they must be
    the sizes ochre.demo runs."""
    from ochre.cli import build_parser
    from ochre.demo import DEFAULTS, LUANTI

    demo = next(a for a in build_parser()._subparsers._group_actions[0].choices.values() if a.prog.endswith("demo"))
    helps = {a.dest: a.help for a in demo._actions}
    assert f"default {DEFAULTS['episodes']}; luanti {LUANTI['episodes']})" in helps["episodes"]
    assert f"default {DEFAULTS['steps']}; luanti {LUANTI['steps']})" in helps["steps"]
    assert f"default {DEFAULTS['tokenizer_steps']})" in helps["tokenizer_steps"]
    assert f"default {DEFAULTS['world_minutes']:g})" in helps["world_minutes"]
    assert f"default {DEFAULTS['rollouts']})" in helps["rollouts"]
    assert f"default {DEFAULTS['long_rollouts']})" in helps["long_rollouts"]
    assert f"default {' '.join(map(str, DEFAULTS['seeds']))})" in helps["seeds"]
    assert f"default {DEFAULTS['tours']})" in helps["tours"]
    assert f"default {DEFAULTS['world_tours']})" in helps["world_tours"]
    assert f"default {DEFAULTS['idm_steps']})" in helps["idm_steps"]


def test_the_headless_tour_is_an_action_file(tmp_path):
    from ochre.demo import _play_actions
    from ochre.runtime.actions import read_action_file

    path = tmp_path / "tour.txt"
    path.write_text(_play_actions(64))
    actions = read_action_file(path)
    assert actions.shape == (64, 4) and np.abs(actions).max() <= 1
    assert (actions[:, 0] > 0).any() and (actions[:, 0] < 0).any() and (actions[:, 3] == 1).any()


@pytest.mark.slow
def test_demo_compare_trains_seed_v3_on_the_same_tokens(tmp_path):
    """`ochre demo --quick --compare seed-v3`: a second world model with the seed-v3 recipe, the
    same tokens, seed and budget, evaluated beside the ochre recipe (about 4 minutes on 2 cores)."""
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "ochre", "demo", "--out", str(out), "--quick", "--compare", "seed-v3"],
                       capture_output=True, text=True, timeout=1200, env={**os.environ, "OCHRE_CACHE": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert {"train", "train_seed_v3"} <= set(report["timings_s"])
    m = report["metrics"]
    assert all(f"seed-v3/{k}" in m for k in ("psnr@1", "psnr@8", "delta_psnr@16", "code_usage@256"))
    run = json.loads(next((out / "world-seed-v3" / "checkpoints").glob("step_*/config.json")).read_text())
    assert run["extra"]["recipe"] == "seed-v3"
    assert "| metric | ochre [95 % interval] | learned (no boosts) | seed-v3 | repeat frame |" in \
        (out / "report.md").read_text()


def test_a_rerun_remakes_exports_this_install_cannot_run(tmp_path):
    """A rerun skips an export only if its folder is this world model's and passes the format's own
    manifest check: one of an older format (a demo folder made before a format change) is remade."""
    from ochre.demo import _exported
    from ochre.export import onnx
    from ochre.export.manifest import write as write_manifest

    folder = tmp_path / "onnx-b1"
    folder.mkdir()
    for g in onnx.GRAPHS:
        (folder / f"{g}.onnx").write_bytes(b"")
    manifest = {"format": onnx.FORMAT, "sources": {"world": {"hash": "abc"}}}
    write_manifest(folder, manifest, [f"{g}.onnx" for g in onnx.GRAPHS])
    assert _exported("onnx", folder, "abc") and not _exported("onnx", folder, "another model")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "step.onnx").write_bytes(b"altered")                     # a file that is not the one checked
    assert not _exported("onnx", folder, "abc")
    (folder / "step.onnx").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": "ochre-onnx/1"}))
    assert not _exported("onnx", folder, "abc")
    assert not _exported("aoti", tmp_path / "missing", "abc")


def test_the_world_record_judges_the_bars_and_keeps_the_evals_timings(tmp_path):
    from ochre.bench.world import bars, eval_timings

    log = tmp_path / "demo.log"
    log.write_text("== eval: ochre eval ...\neval: ochre rollouts (3 seeds) took 209 s\nnoise took 3 s\n"
                   "eval: test_world ochre tours took 96 s\n")
    assert eval_timings(log) == {"ochre rollouts (3 seeds)": 209.0, "test_world ochre tours": 96.0}
    m = {"psnr@8/over_repeat": 1.5, "psnr@8/over_repeat/ci": [0.9, 2.0], "test_world/psnr@8/over_repeat": 2.0,
         "test_world/psnr@8/over_repeat/ci": [1.4, 2.6]}
    verdicts = bars(m)
    row = lambda name: next(v for v in verdicts[name] if v["metric"] == "psnr@8/over_repeat")   # noqa: E731
    assert row("demo/test")["verdict"] == "missed" and row("demo/test")["gap"] == pytest.approx(0.1)
    assert row("demo/test_world")["verdict"] == "met"
    assert row("shipped/test_world")["verdict"] == "missed"              # the shipped model's bar is 2 dB
