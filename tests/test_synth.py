"""`ochre synth`: determinism, camera/image geometry, the policy's action mix, and both layouts."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ochre.actions import VPT_DEG_PER_COUNT
from ochre.data import synth
from ochre.data.synth import renderer
from ochre.data.video import read_video


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Phase correlation: (dy, dx) such that b's content ~ a's content moved by (dy, dx) pixels."""
    a, b = (x.astype(np.float64).mean(-1) for x in (a, b))
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    cross = np.fft.fft2((b - b.mean()) * window) * np.conj(np.fft.fft2((a - a.mean()) * window))
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    dy, dx = np.unravel_index(np.argmax(corr), corr.shape)
    h, w = corr.shape
    return int((dy + h // 2) % h - h // 2), int((dx + w // 2) % w - w // 2)


def _poses(world, yaw, pitch, u=100.5, v=300.5) -> synth.Poses:
    yaw, pitch = np.asarray(yaw, float), np.asarray(pitch, float)
    u, v = np.full(len(yaw), u), np.full(len(yaw), v)
    return synth.Poses(u, v, synth.ground_height(world, u, v) + synth.EYE_HEIGHT, yaw, pitch)


@pytest.fixture(scope="module")
def world():
    return synth.make_world(0)


def test_same_seed_same_episode_bit_exact_and_episodes_differ():
    a = synth.render_episode(3, 0, 12, 32)
    b = synth.render_episode(3, 0, 12, 32)
    assert a.frames.shape == (13, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.camera.shape == (12, 2)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.loading, b.loading)
    np.testing.assert_array_equal(a.camera, b.camera)
    for name in synth.KEY_NAMES:
        np.testing.assert_array_equal(a.keys[name], b.keys[name])
    c = synth.render_episode(3, 1, 12, 32)
    assert not np.array_equal(a.frames[0], c.frames[0])          # start positions differ
    assert (a.poses.u[0], a.poses.v[0]) != (c.poses.u[0], c.poses.v[0])


@pytest.mark.parametrize("u, v", [(100.5, 300.5), (40.2, 77.9), (250.0, 420.0)])
def test_yaw_moves_content_horizontally_right_turn_moves_it_left(world, u, v):
    frames = synth.render(world, _poses(world, [30.0, 34.0, 26.0], [10.0] * 3, u, v), 64)
    expected = renderer._lens(64).focal * np.tan(np.radians(4.0))                 # ~3.2 px
    dy, dx = _shift(frames[0], frames[1])
    assert abs(dy) <= 1 and -expected - 1.5 <= dx <= -expected + 1.5, (dy, dx)
    dy, dx = _shift(frames[0], frames[2])
    assert abs(dy) <= 1 and expected - 1.5 <= dx <= expected + 1.5, (dy, dx)


@pytest.mark.parametrize("u, v", [(100.5, 300.5), (40.2, 77.9), (250.0, 420.0)])
def test_pitch_moves_content_vertically_looking_down_moves_it_up(world, u, v):
    frames = synth.render(world, _poses(world, [30.0] * 3, [5.0, 9.0, 1.0], u, v), 64)
    expected = renderer._lens(64).focal * (np.tan(np.radians(9.0)) - np.tan(np.radians(5.0)))
    dy, dx = _shift(frames[0], frames[1])
    assert abs(dx) <= 1 and -expected - 1.5 <= dy <= -expected + 1.5, (dy, dx)
    dy, dx = _shift(frames[0], frames[2])
    assert abs(dx) <= 1 and dy > 0, (dy, dx)


def test_walking_changes_the_view_standing_still_does_not(world):
    n = 10
    keys = {name: np.zeros(n, np.uint8) for name in synth.KEY_NAMES}
    still = synth.walk(world, np.zeros((n, 2)), keys, (100.5, 300.5, 30.0, 10.0))
    keys["forward"][:] = 1
    walked = synth.walk(world, np.zeros((n, 2)), keys, (100.5, 300.5, 30.0, 10.0))
    assert np.hypot(walked.u[-1] - walked.u[0], walked.v[-1] - walked.v[0]) == pytest.approx(0.2 * n)
    frames_still, frames_walk = synth.render(world, still, 48), synth.render(world, walked, 48)
    np.testing.assert_array_equal(frames_still[0], frames_still[-1])
    np.testing.assert_array_equal(frames_still[0], frames_walk[0])
    assert np.abs(frames_walk[-1].astype(int) - frames_walk[0]).mean() > 5.0


@pytest.mark.parametrize("size", [96, 128])
def test_other_sizes_render(size):
    ep = synth.render_episode(0, 2, 3, size)
    assert ep.frames.shape == (4, size, size, 3) and ep.loading.shape[1:] == (size, size, 3)
    assert ep.frames.std() > 10                                    # real content, not a flat colour


@pytest.mark.parametrize("quantum", [None, VPT_DEG_PER_COUNT])
def test_policy_mix_is_balanced_and_covers_every_control(quantum):
    acts = synth.policy(np.random.default_rng(0), 20_000, pitch0=20.0, quantum=quantum)
    mix = synth.action_mix(acts.behaviour)
    assert max(mix.values()) <= 0.25 and mix["still"] > 0.03, mix
    assert min(mix.values()) > 0.03, mix
    pitch, yaw = acts.camera[:, 0], acts.camera[:, 1]
    assert (yaw > 0.5).mean() > 0.1 and (yaw < -0.5).mean() > 0.1
    assert (pitch > 0.3).mean() > 0.03 and (pitch < -0.3).mean() > 0.03
    assert np.abs(yaw).max() <= 6.0 and np.abs(pitch).max() <= 3.0
    assert np.abs(20.0 + np.cumsum(pitch)).max() <= 60.0 + 1e-9     # the policy keeps the limit itself
    for name in ("forward", "back", "left", "right"):
        assert 0.05 < acts.keys[name].mean() < 0.5, name
    if quantum:
        counts = np.round(acts.camera / VPT_DEG_PER_COUNT)
        np.testing.assert_array_equal(counts * VPT_DEG_PER_COUNT, acts.camera)


def _synth(tmp_path, layout, workers=1, episodes=2, steps=10):
    cfg = synth.SynthConfig(episodes=episodes, steps=steps, seed=5, layout=layout, size=32, workers=workers)
    return cfg, synth.synthesize(tmp_path, cfg, progress=False)


def test_minerl_layout_files_keys_shapes_and_frame_count(tmp_path):
    cfg, summary = _synth(tmp_path, "minerl")
    assert summary["written"] == 2 and summary["frames"] > 2 * 11
    for i in range(2):
        folder = tmp_path / synth.episode_name(5, i, "minerl")
        assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "recording.mp4", "rendered.npz"]
        meta = json.loads((folder / "metadata.json").read_text())
        with np.load(folder / "rendered.npz") as npz:
            arrays = dict(npz)
        assert set(arrays) == {"reward", "action$camera"} | {f"action${k}" for k in synth.KEY_NAMES}
        assert arrays["action$camera"].shape == (10, 2) and arrays["action$camera"].dtype == np.float32
        assert all(arrays[f"action${k}"].shape == (10,) for k in synth.KEY_NAMES)
        assert meta["duration_steps"] == 10 and meta["duration_ms"] == 500
        assert meta["stream_name"] == folder.name
        loading = meta["true_video_frame_count"] - 11
        assert 1 <= loading <= 6
        video = read_video(folder / "recording.mp4")
        assert len(video) == meta["true_video_frame_count"]
        ep = synth.render_episode(5, i, 10, 32)
        np.testing.assert_array_equal(arrays["action$camera"].astype(np.float64), ep.camera)  # what was rendered
        mse = ((video[loading:].astype(float) - ep.frames) ** 2).mean()
        assert 10 * np.log10(255**2 / mse) > 32, mse   # state t is video frame L + t (H.264 at crf 10)
        assert np.abs(video[loading - 1].astype(int) - ep.frames[0]).mean() > 20  # loading looks nothing alike


def test_vpt_layout_lines_fields_and_exact_camera_round_trip(tmp_path):
    _synth(tmp_path, "vpt")
    stem = tmp_path / synth.episode_name(5, 0, "vpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{synth.episode_name(5, i, 'vpt')}{ext}" for i in range(2) for ext in (".jsonl", ".mp4"))
    lines = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]
    assert len(lines) == 11 == len(read_video(stem.with_suffix(".mp4")))
    for line in lines:
        assert set(line["mouse"]) >= {"x", "y", "dx", "dy", "scaledX", "scaledY", "dwheel", "buttons", "newButtons"}
        assert set(line["keyboard"]) == {"keys", "newKeys", "chars"} and line["isGuiOpen"] is False
        assert {"hotbar", "yaw", "pitch", "tick", "milli"} <= set(line)
    assert lines[-1]["mouse"]["dx"] == 0 and lines[-1]["mouse"]["dy"] == 0 and lines[-1]["keyboard"]["keys"] == []
    ep = synth.render_episode(5, 0, 10, 32, mouse_counts=True)
    camera = np.array([[ln["mouse"]["dy"], ln["mouse"]["dx"]] for ln in lines[:-1]]) * VPT_DEG_PER_COUNT
    np.testing.assert_array_equal(camera, ep.camera)
    for name, key in (("forward", "key.keyboard.w"), ("back", "key.keyboard.s"),
                      ("left", "key.keyboard.a"), ("right", "key.keyboard.d")):
        np.testing.assert_array_equal([key in ln["keyboard"]["keys"] for ln in lines[:-1]], ep.keys[name] == 1)


def test_writers_take_hand_made_frames(tmp_path):
    n, loading = 6, 3
    frames = np.repeat(np.arange(loading + n + 1, dtype=np.uint8)[:, None, None, None] * 20, 16, 1)
    frames = np.repeat(np.repeat(frames, 16, 2), 3, 3)                  # frame i is grey level 20 i
    camera = np.stack([np.arange(n) * VPT_DEG_PER_COUNT, -np.arange(n) * 2 * VPT_DEG_PER_COUNT], 1)
    keys = {"forward": np.array([1, 1, 0, 0, 1, 0]), "attack": np.array([0, 1, 1, 0, 0, 0])}
    synth.write_minerl(tmp_path / "m", frames, camera, keys, loading)
    video = read_video(tmp_path / "m" / "recording.mp4")
    np.testing.assert_allclose(video.mean(axis=(1, 2, 3)), np.arange(loading + n + 1) * 20, atol=2)
    assert json.loads((tmp_path / "m" / "metadata.json").read_text())["true_video_frame_count"] == 10
    synth.write_vpt(tmp_path / "v", frames[loading:], camera, keys)
    lines = (tmp_path / "v.jsonl").read_text().splitlines()
    assert len(lines) == n + 1 and json.loads(lines[1])["mouse"]["buttons"] == [0]
    with pytest.raises(FileExistsError):
        synth.write_minerl(tmp_path / "m", frames, camera, keys, loading)
    with pytest.raises(ValueError, match="L \\+ N \\+ 1"):
        synth.write_minerl(tmp_path / "m2", frames, camera, keys, loading + 1)
    with pytest.raises(ValueError, match="mouse counts"):
        synth.write_vpt(tmp_path / "w", frames[loading:], camera + 0.01, keys)


def test_rerun_skips_complete_episodes_and_clears_stale_temporaries(tmp_path):
    _synth(tmp_path, "minerl", episodes=1, steps=4)
    stale = tmp_path / f".{synth.episode_name(5, 1, 'minerl')}.abc.tmp"
    stale.mkdir()
    (stale / "recording.mp4.part").write_bytes(b"half")
    _, summary = _synth(tmp_path, "minerl", episodes=2, steps=4)
    assert summary["skipped"] == 1 and summary["written"] == 1 and not stale.exists()


def test_workers_do_not_change_the_output(tmp_path):
    """Bit-exact files with 1 worker (in this process) and 2 (spawned). (It once failed in 3 of 8 full runs:
    x264's SIMD macroblock tree at 32 px read the heap, ochre.data.video.deterministic_simd.)"""
    _synth(tmp_path / "one", "vpt", workers=1)
    _synth(tmp_path / "two", "vpt", workers=2)
    for i in range(2):
        name = synth.episode_name(5, i, "vpt")
        for ext in (".jsonl", ".mp4"):
            assert (tmp_path / "one" / f"{name}{ext}").read_bytes() == (tmp_path / "two" / f"{name}{ext}").read_bytes()


def test_cli_runs_end_to_end(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "ochre", "synth", str(tmp_path / "o"), "--episodes", "2",
                          "--steps", "6", "--size", "32", "--workers", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "frames/s" in out.stdout and "action mix" in out.stdout
    assert len(list((tmp_path / "o").glob("v3_synth_0_*/recording.mp4"))) == 2


def test_frames_do_not_depend_on_how_they_are_batched(world, monkeypatch):
    poses = _poses(world, np.linspace(0, 90, 7), np.linspace(-30, 40, 7))
    together = synth.render(world, poses, 32)
    monkeypatch.setattr(renderer, "PIXELS_PER_BATCH", 32 * 32)                # one frame per batch
    np.testing.assert_array_equal(together, synth.render(world, poses, 32))


def test_the_view_mostly_holds_the_horizon_and_looks_away_are_brief():
    cfg = synth.SynthConfig(episodes=24, steps=400)
    assert synth.horizon_share(cfg) >= 0.85
    # Looks up and down still happen (the policy stays balanced) ...
    acts = synth.policy(np.random.default_rng(1), 20_000, pitch0=0.0)
    pitch = np.cumsum(acts.camera[:, 0])
    assert np.abs(pitch).max() > 35.0
    # ... but the pitch comes back: a stretch beyond 35 degrees lasts under 3 s (60 ticks).
    away = np.abs(pitch) > 35.0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], away.astype(np.int8), [0]])))
    assert (edges[1::2] - edges[::2]).max() < 60


def test_horizon_in_view_follows_the_renderer_s_horizon_row():
    inside = synth.horizon_in_view(np.array([0.0, 30.0, -30.0, 40.0, -40.0, 89.0]))
    assert inside.tolist() == [True, True, True, False, False, False]   # atan(32 / 45.7) = 35 deg
