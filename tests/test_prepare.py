"""`ochre prepare`: alignment, action aggregation, bad input, interruption."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from recordings import read_index_frames

from ochre.actions import kept_ticks
from ochre.data.loader import WindowDataset
from ochre.data.prepare import PrepareConfig, prepare
from ochre.data.video import decode_frames


def _samples(out):
    """Every prepared sample, in order: key -> (frames, actions, ticks, meta)."""
    ds = WindowDataset(out, window=2, split="all", shuffle=False)
    got = {}
    for s in ds.samples():
        got[s["__key__"]] = (decode_frames(s["mp4"]),
                             np.load(io.BytesIO(s["actions.npy"])),
                             np.load(io.BytesIO(s["ticks.npy"])), s["meta"])
    return got


@pytest.mark.parametrize("layout", ["minerl", "vpt"])
def test_every_kept_frame_is_state_L_plus_tick(tmp_path, make_minerl, make_vpt, layout):
    n, loading = 150, 4
    if layout == "minerl":
        make_minerl("traj", n=n, loading=loading)
    else:
        make_vpt("traj", n=n)
        loading = 0
    out = tmp_path / "out"
    prepare(tmp_path / "src", out, PrepareConfig(fps=8, segment=16), workers=1, progress=False)
    samples = _samples(out)
    assert len(samples) > 3                                   # 61 kept frames in segments of 16
    all_ticks = []
    for frames, actions, ticks, meta in samples.values():
        assert frames.shape[1:] == (64, 64, 3) and len(frames) == len(ticks) == len(actions) + 1
        np.testing.assert_array_equal(read_index_frames(frames), loading + ticks)
        assert meta["format"] == layout and meta["loading_frames"] == loading
        all_ticks.append(ticks)
    # Segments share their boundary frame; together they are exactly the kept ticks.
    joined = np.concatenate([all_ticks[0]] + [t[1:] for t in all_ticks[1:]])
    np.testing.assert_array_equal(joined, kept_ticks(n + 1, 8))


@pytest.mark.parametrize("layout", ["minerl", "vpt"])
def test_actions_are_window_sums_and_means(tmp_path, layout):
    from recordings import index_frames

    from ochre.data.synth import write_minerl, write_vpt

    n = 10   # fps 8 keeps ticks 0, 2, 5, 7, 10: windows {0,1} {2,3,4} {5,6} {7,8,9}
    camera = np.zeros((n, 2))
    camera[0:2] = [[1.5, 3.0], [0.75, 4.5]]          # pitch 2.25, yaw 7.5 -> [0.5, 0.15]
    camera[2:5] = [[-9.0, 9.0]] * 3                   # pitch -27 -> -15 -> -1; yaw 27 -> 1
    keys = {k: np.zeros(n, np.int64) for k in ("forward", "back", "left", "right", "jump", "sneak",
                                                "sprint", "attack")}
    keys["forward"][[5, 6, 7]] = 1                    # window {5,6}: z = 1; {7,8,9}: z = 1/3
    keys["left"][[2, 3]] = 1                          # window {2,3,4}: x = -2/3
    keys["right"][[7, 8, 9]] = 1                      # window {7,8,9}: x = 1
    keys["back"][9] = 1                               # window {7,8,9}: z = 1/3 - 1/3 = 0
    src = tmp_path / "src"
    if layout == "minerl":
        write_minerl(src / "t", index_frames(n + 3), camera, keys, loading=2)
    else:
        write_vpt(src / "t", index_frames(n + 1), camera, keys)
    prepare(src, tmp_path / "out", PrepareConfig(fps=8), workers=1, progress=False)
    (_, actions, ticks, _), = _samples(tmp_path / "out").values()
    assert ticks.tolist() == [0, 2, 5, 7, 10]
    want = [[7.5 / 15, 2.25 / 15, 0, 0], [1, -1, -2 / 3, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    np.testing.assert_allclose(actions, want, atol=1e-6)


def _corrupt_all_the_ways(root, make_minerl, make_vpt):
    """Good recordings interleaved with every kind of bad one; returns {name: expected reason}."""
    bad = {}
    for i in range(3):
        make_minerl(f"good_{i}", n=40, seed=i, root=root)
    make_vpt("good_vpt", n=40, root=root)

    d = make_minerl("bad_corrupt_video", root=root)
    (d / "recording.mp4").write_bytes(os.urandom(4000))
    bad["bad_corrupt_video"] = "recording.mp4"
    d = make_minerl("bad_truncated_video", n=200, root=root)
    data = (d / "recording.mp4").read_bytes()
    (d / "recording.mp4").write_bytes(data[: len(data) // 2])
    bad["bad_truncated_video"] = "recording.mp4"
    d = make_minerl("bad_no_metadata", root=root)
    (d / "metadata.json").unlink()
    bad["bad_no_metadata"] = "missing metadata.json"
    d = make_minerl("bad_metadata_json", root=root)
    (d / "metadata.json").write_text("{not json")
    bad["bad_metadata_json"] = "malformed metadata.json"
    d = make_minerl("bad_no_npz", root=root)
    (d / "rendered.npz").unlink()
    bad["bad_no_npz"] = "missing rendered.npz"
    d = make_minerl("bad_npz", root=root)
    (d / "rendered.npz").write_bytes(b"PK\x03\x04garbage")
    bad["bad_npz"] = "malformed rendered.npz"
    d = make_minerl("bad_negative_L", root=root)
    meta = json.loads((d / "metadata.json").read_text())
    meta["true_video_frame_count"] = meta["duration_steps"] - 3
    (d / "metadata.json").write_text(json.dumps(meta))
    bad["bad_negative_L"] = "L=-4 < 0"
    d = make_minerl("bad_steps_mismatch", root=root)
    meta = json.loads((d / "metadata.json").read_text())
    meta["true_video_frame_count"] += 5
    meta["duration_steps"] += 5
    (d / "metadata.json").write_text(json.dumps(meta))
    bad["bad_steps_mismatch"] = "duration_steps"            # metadata disagrees with rendered.npz
    d = make_minerl("bad_fewer_frames_than_claimed", root=root)
    meta = json.loads((d / "metadata.json").read_text())
    meta["true_video_frame_count"] += 5                     # L grows by 5, video too short
    (d / "metadata.json").write_text(json.dumps(meta))
    bad["bad_fewer_frames_than_claimed"] = "truncated video"
    d = make_minerl("bad_nan_actions", root=root)
    with np.load(d / "rendered.npz") as z:
        arrays = dict(z)
    arrays["action$camera"][7, 1] = np.nan
    np.savez(d / "rendered.npz", **arrays)
    bad["bad_nan_actions"] = "NaN/inf"
    d = make_minerl("bad_empty", n=0, loading=0, root=root)
    bad["bad_empty"] = "empty recording"
    mp4 = make_vpt("bad_vpt_no_jsonl", root=root)
    mp4.with_suffix(".jsonl").unlink()
    bad["bad_vpt_no_jsonl.mp4"] = "missing bad_vpt_no_jsonl.jsonl"
    mp4 = make_vpt("bad_vpt_jsonl", root=root)
    lines = mp4.with_suffix(".jsonl").read_text().splitlines()
    lines[5] = "{broken"
    mp4.with_suffix(".jsonl").write_text("\n".join(lines))
    bad["bad_vpt_jsonl.mp4"] = "line 6"
    mp4 = make_vpt("bad_vpt_inf", root=root)
    lines = mp4.with_suffix(".jsonl").read_text().splitlines()
    obj = json.loads(lines[3])
    obj["mouse"]["dx"] = float("inf")
    lines[3] = json.dumps(obj)
    mp4.with_suffix(".jsonl").write_text("\n".join(lines))
    bad["bad_vpt_inf.mp4"] = "NaN/inf"
    return bad


def test_bad_inputs_are_skipped_with_reasons_and_neighbours_kept(tmp_path, make_minerl, make_vpt):
    root = tmp_path / "src"
    bad = _corrupt_all_the_ways(root, make_minerl, make_vpt)
    out = tmp_path / "out"
    summary = prepare(root, out, PrepareConfig(fps=8, per_shard=3), workers=2, progress=False)
    report = json.loads((out / "report.json").read_text())
    reasons = {e["source"]: e["reason"] for e in report["skipped"]}
    assert set(reasons) == set(bad), reasons
    for name, fragment in bad.items():
        assert fragment in reasons[name], (name, reasons[name])
    assert summary["kept"] == 4 and summary["skipped"] == len(bad)
    # The good neighbours are complete and exact, whichever shard they landed in.
    samples = _samples(out)
    sources = {meta["source"] for *_, meta in samples.values()}
    assert sources == {"good_0", "good_1", "good_2", "good_vpt.mp4"}
    for frames, _, ticks, meta in samples.values():
        np.testing.assert_array_equal(read_index_frames(frames), meta["loading_frames"] + ticks)


def test_missing_frame_count_is_repaired_by_counting(tmp_path, make_minerl):
    d = make_minerl("t", n=30, loading=5)
    meta = json.loads((d / "metadata.json").read_text())
    del meta["true_video_frame_count"]
    (d / "metadata.json").write_text(json.dumps(meta))
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(), workers=1, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (entry,) = report["recordings"]
    assert entry["status"] == "kept" and entry["loading_frames"] == 5 and "counted" in entry["notes"][0]


def test_killed_prepare_reruns_to_the_complete_dataset(tmp_path, make_minerl):
    for i in range(8):
        make_minerl(f"t{i}", n=120, seed=i)
    cmd = [sys.executable, "-m", "ochre", "prepare", str(tmp_path / "src"), str(tmp_path / "killed"),
           "--per-shard", "1", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed" / "shards"
    deadline = time.time() + 60
    while time.time() < deadline and len(list(shards.glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(shards.glob("*.json")))
    assert 2 <= done_before < 8, "the kill should land mid-run"
    assert not (tmp_path / "killed" / "index.json").exists()
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    prepare(tmp_path / "src", tmp_path / "clean", PrepareConfig(per_shard=1), workers=1, progress=False)
    for name in ("index.json",):
        killed = json.loads((tmp_path / "killed" / name).read_text())
        clean = json.loads((tmp_path / "clean" / name).read_text())
        assert killed == clean
    for tar in sorted((tmp_path / "clean" / "shards").glob("*.tar")):
        assert (shards / tar.name).read_bytes() == tar.read_bytes()
    assert not list(shards.glob("*.tmp")) and not list(shards.glob(".*.tmp"))


def test_unreadable_zip_is_reported_not_raised(tmp_path, make_minerl):
    d = make_minerl("t", n=20)
    with zipfile.ZipFile(d / "rendered.npz", "w") as z:
        z.writestr("reward.npy", b"not an npy")
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(), workers=1, progress=False)
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["skipped"]
    assert "rendered.npz" in entry["reason"]


def test_prepare_cli_reports_missing_source(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ochre", "prepare", str(tmp_path / "nope"), str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_unexpected_error_in_one_recording_spares_the_rest(tmp_path, make_minerl, monkeypatch):
    import ochre.data.prepare as prep

    make_minerl("a", n=30)
    make_minerl("b", n=30)
    real = prep.load_recording

    def flaky(rec, *args):
        if rec.name == "a":
            raise RuntimeError("decoder exploded")
        return real(rec, *args)
    monkeypatch.setattr(prep, "load_recording", flaky)
    summary = prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(), workers=1, progress=False)
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["skipped"]
    assert summary["kept"] == 1 and entry["source"] == "a"
    assert entry["reason"] == "unexpected error: RuntimeError: decoder exploded"


def test_prepare_cli_reports_a_source_without_recordings(tmp_path):
    (tmp_path / "empty").mkdir()
    r = subprocess.run([sys.executable, "-m", "ochre", "prepare", str(tmp_path / "empty"), str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no MineRL or VPT recordings" in r.stderr


def test_rerun_with_other_settings_is_refused_before_any_work(tmp_path, make_minerl):
    for i in range(3):
        make_minerl(f"t{i}", n=40, seed=i)
    src, out = tmp_path / "src", tmp_path / "out"

    def cli(*flags):
        return subprocess.run([sys.executable, "-m", "ochre", "prepare", str(src), str(out), "--workers", "1",
                               *flags], capture_output=True, text=True)
    assert cli("--fps", "8").returncode == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = cli("--fps", "10")
    assert r.returncode == 2 and "fps 8.0 -> 10.0" in r.stderr and "--overwrite" in r.stderr, r.stderr
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before    # nothing touched
    make_minerl("t3", n=40, seed=3)                                   # the source set changed too
    r = cli("--fps", "8")
    assert r.returncode == 2 and "sources: 1 added (t3)" in r.stderr, r.stderr
    (src / "t3" / "recording.mp4").unlink()
    (src / "t3" / "rendered.npz").unlink()
    (src / "t3" / "metadata.json").unlink()
    r = cli("--fps", "8")                                             # the same run again: resumes
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stderr
    assert cli("--fps", "10", "--overwrite").returncode == 0
    index = json.loads((out / "index.json").read_text())
    assert index["fps"] == 10.0 and index["config"]["fps"] == 10.0
    ticks = [t for *_, t, _ in _samples(out).values()]
    assert all(np.array_equal(t, kept_ticks(41, 10)) for t in ticks)  # the shards are 10 fps too


def test_a_rerun_removes_the_shard_a_killed_run_was_writing(tmp_path, make_minerl):
    """A kill inside a shard's atomic write leaves its temporary file (the shard itself is absent, so the rerun
    writes it again); the rerun deletes the temporary and the output matches a clean run's."""
    for i in range(2):
        make_minerl(f"t{i}", n=40, seed=i)
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(per_shard=1), workers=1, progress=False)
    shards = tmp_path / "out" / "shards"
    (shards / "clips-000001.tar").unlink()
    (shards / "clips-000001.json").unlink()
    (shards / ".clips-000001.tar.k1ll3d.tmp").write_bytes(b"half a tar")
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(per_shard=1), workers=1, progress=False)
    assert not list(shards.glob(".*.tmp")) and (shards / "clips-000001.tar").is_file()
    prepare(tmp_path / "src", tmp_path / "clean", PrepareConfig(per_shard=1), workers=1, progress=False)
    for tar in sorted((tmp_path / "clean" / "shards").glob("*.tar")):
        assert (shards / tar.name).read_bytes() == tar.read_bytes()
