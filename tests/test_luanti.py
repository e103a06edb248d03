"""`ochre record luanti` without the game: frame numbers, labels from the pose log, settings, the
one-line errors, and the refusal of a rerun with other settings. (tests/test_luanti_record.py runs
the real game.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ochre.actions import VPT_DEG_PER_COUNT
from ochre.data.luanti import game as luanti_game
from ochre.data.luanti.behaviour import Hops, plan
from ochre.data.luanti.game import GameConfig, GameError, find_binaries, fingerprint, settings
from ochre.data.luanti.labels import Pose, agreement, camera_counts, label_accuracy, labels
from ochre.data.luanti.marker import frame_number, picture, steps_ahead
from ochre.data.luanti.record import OUTPUTS, RecordConfig, episode_start, parse_size, run_record
from ochre.data.shards import OutputMismatch, claim_output


def _window(cfg: GameConfig, number: int, rng) -> np.ndarray:
    """A window as the client-side mod draws it: random scene, cells of the number in the top strip."""
    w, h = cfg.window
    win = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(cfg.marker_bits):
        x0, x1 = round(i * w / cfg.marker_bits), round((i + 1) * w / cfg.marker_bits)
        win[:cfg.strip, x0:x1] = 255 if number >> i & 1 else 0
    return win


@pytest.mark.parametrize("size", [(64, 64), (128, 128), (160, 90)])
def test_frame_number_reads_every_value_and_picture_drops_the_strips(size):
    cfg = GameConfig(width=size[0], height=size[1])
    rng = np.random.default_rng(0)
    for number in range(1 << cfg.marker_bits):
        win = _window(cfg, number, rng)
        assert frame_number(win, cfg.strip, cfg.marker_bits) == number
    assert picture(win, cfg.strip).shape == (size[1], size[0], 3)
    np.testing.assert_array_equal(picture(win, cfg.strip), win[cfg.strip:cfg.strip + size[1]])


def test_steps_ahead_wraps_around_the_marker_modulus():
    assert steps_ahead(5, 5, 8) == 0
    assert steps_ahead(6, 5, 8) == 1
    assert steps_ahead(4, 5, 8) == -1
    assert steps_ahead(0, 255, 8) == 1            # 256 shows as 0
    assert steps_ahead(255, 256, 8) == -1


def _pose(step, yaw, pitch, keys="------", liquid="0", x=0.0):
    # The mod logs look_horizontal = set_look_horizontal's angle + 90 degrees.
    return Pose.parse([str(step), "0.05", f"{x}", "10", "0", f"{yaw + 90.0}", f"{pitch}", keys, liquid])


def test_pose_parse_keys_angles_and_liquid():
    p = Pose.parse(["7", "0.051", "1.5", "2", "-3", "120.0", "-4.5", "w-s-j-", "1"])
    assert (p.step, p.dtime, p.x, p.y, p.z) == (7, 0.051, 1.5, 2.0, -3.0)
    assert p.yaw == pytest.approx(30.0) and p.pitch == -4.5
    assert p.keys == {"forward", "back", "jump"} and p.liquid
    assert p.as_json() == {"x": 1.5, "y": 2.0, "z": -3.0, "yaw": 30.0, "pitch": -4.5}


def test_camera_counts_signs_and_wrap():
    # The engine's yaw grows turning left, so a right turn (dx > 0) lowers it; across 0/360 too.
    poses = [_pose(0, 1.5, 0.0), _pose(1, 359.1, 0.0), _pose(2, 0.6, 0.3), _pose(3, 0.6, -0.15)]
    counts = camera_counts(poses)
    np.testing.assert_allclose(counts, [[0, 16], [2, -10], [-3, 0]], atol=1e-6)


def test_labels_are_pose_changes_and_next_step_controls():
    poses = [_pose(0, 10.0, 0.0), _pose(1, 10.0 - 0.45, 0.15, "w-----"), _pose(2, 9.55, 0.15, "-a--j-")]
    lab = labels(poses)
    assert lab.cut is None
    np.testing.assert_allclose(lab.camera, [[0.15, 0.45], [0.0, 0.0]], atol=1e-9)
    assert lab.keys["forward"].tolist() == [1, 0] and lab.keys["left"].tolist() == [0, 1]
    assert lab.keys["jump"].tolist() == [0, 1] and lab.keys["back"].tolist() == [0, 0]


def test_labels_cut_before_a_look_change_that_is_not_whole_counts():
    poses = [_pose(0, 10.0, 0.0), _pose(1, 9.7, 0.0), _pose(2, 9.7, 0.07), _pose(3, 9.7, 0.22)]
    lab = labels(poses)
    assert lab.cut is not None and lab.cut[0] == 1 and "not whole counts" in lab.cut[1]
    assert lab.camera.shape == (1, 2) and lab.keys["forward"].shape == (1,)


def test_labels_span_lost_frames_when_the_keys_held_and_cut_when_they_changed():
    poses = [_pose(0, 10.0, 0.0), _pose(3, 9.1, 0.0, "w-----"), _pose(4, 9.1, 0.0, "w-----")]
    held = [[], [_pose(1, 9.7, 0.0, "w-----"), _pose(2, 9.4, 0.0, "w-----")], []]
    lab = labels(poses, held)
    assert lab.cut is None
    np.testing.assert_allclose(lab.camera[:, 1], [0.9, 0.0], atol=1e-9)   # three steps' turn in one transition
    assert lab.keys["forward"].tolist() == [1, 1]
    changed = [[], [_pose(1, 9.7, 0.0, "-a----"), _pose(2, 9.4, 0.0, "w-----")], []]
    lab = labels(poses, changed)
    assert lab.cut is not None and lab.cut[0] == 0 and "keys changed" in lab.cut[1]
    assert lab.camera.shape == (0, 2)


def test_agreement_counts_what_the_game_did_as_sent():
    poses = [_pose(0, 10.0, 0.0), _pose(1, 9.7, 0.0, "w-----"), _pose(2, 9.7, 0.0, "w-----")]
    none = [[], [], []]
    sent = np.array([[0, 2], [0, 2]])                     # the second move arrived late: not done
    got = agreement(poses, none, sent, [frozenset({"forward"})] * 2)
    assert got == {"transitions": 2, "multi_step": 0, "camera_exact": 0.5, "camera_within": 1.0, "keys": 1.0}
    sent_far = np.array([[0, 2], [0, 10]])
    assert agreement(poses, none, sent_far, [frozenset()] * 2)["camera_within"] == 0.5
    lost = [[], [], [_pose(9, 9.7, 0.0)]]                 # the second transition spans two steps: left out
    got = agreement(poses, lost, sent, [frozenset({"forward"})] * 2)
    assert got["multi_step"] == 1 and got["camera_exact"] == 1.0


def test_label_accuracy_checks_a_file_as_written():
    poses = [{"yaw": 10.0, "pitch": 0.0}, {"yaw": 9.4, "pitch": 0.3}, {"yaw": 9.4, "pitch": 0.3}]
    good = np.array([[0.3, 0.6], [0.0, 0.0]])
    assert label_accuracy(good, poses) == 1.0
    shifted = np.array([[0.0, 0.0], [0.3, 0.6]])          # the labels one frame late
    assert label_accuracy(shifted, poses) == 0.0


def test_mouse_sensitivity_makes_one_pixel_one_vpt_count():
    cfg = GameConfig(width=64, height=64)
    w, h = cfg.window
    fov_y = math.radians(72.0) * min(max(math.sqrt(1.6 * h / w), 1.0), 1.4)
    per_pixel = cfg.mouse_sensitivity() * math.tan(fov_y / 2) * 1.3763818698
    assert per_pixel == pytest.approx(VPT_DEG_PER_COUNT, rel=1e-12)
    assert GameConfig(width=128, height=128).mouse_sensitivity() != GameConfig(width=160, height=90).mouse_sensitivity()


def test_settings_keep_the_server_local_and_the_game_plain():
    s = settings(GameConfig(hud=False), 30123)
    assert s["bind_address"] == "127.0.0.1" and s["port"] == 30123
    assert s["enable_sound"] == "false" and s["creative_mode"] == "true" and s["enable_damage"] == "false"
    assert s["time_speed"] == 0 and s["fps_max"] == s["fps_max_unfocused"] == 20
    assert s["camera_smoothing"] == 0 and s["view_bobbing_amount"] == 0 and s["node_highlighting"] == "none"
    assert settings(GameConfig(hud=True), 1)["ochre_hud"] == "true"


def test_missing_game_is_one_line_naming_the_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(luanti_game, "GAME_DIRS", (str(tmp_path),))
    with pytest.raises(GameError) as e:
        find_binaries()
    msg = str(e.value)
    assert "\n" not in msg and "minetest and Xvfb not found" in msg
    assert "apt-get install minetest xvfb libxtst6" in msg


def test_parse_size():
    assert parse_size("64") == (64, 64)
    assert parse_size("160x90") == (160, 90)
    with pytest.raises(ValueError, match="--size takes N or WxH"):
        parse_size("big")


def test_episode_starts_are_fixed_by_seed_and_index():
    a, b, c = episode_start(0, 3)[0], episode_start(0, 3)[0], episode_start(0, 4)[0]
    assert a == b and a != c
    assert len({(p["x"], p["z"]) for p in a}) == len(a) > 1          # further points where the first is sea
    assert len({(p["yaw"], p["pitch"]) for p in a}) == 1
    assert -10.0 <= a[0]["pitch"] <= 25.0 and 0.0 <= a[0]["yaw"] < 360.0


def test_plan_is_the_synth_policy_in_whole_counts():
    p = plan(np.random.default_rng(0), 400, 5.0)
    assert p.counts.shape == (400, 2) and p.counts.dtype == np.int64
    assert len(p.walk) == 400 and any(p.walk) and not all(p.walk)
    assert np.abs(5.0 + np.cumsum(p.counts[:, 0]) * VPT_DEG_PER_COUNT).max() <= 60.0 + 1e-9


def test_hops_swim_up_in_water_and_jump_when_walking_stalls():
    hops = Hops(np.random.default_rng(0))
    assert hops(_pose(0, 0.0, 0.0, liquid="1"), frozenset())
    walk = frozenset({"forward"})
    hops = Hops(np.random.default_rng(0))
    hops.rng = type("NoLuck", (), {"random": staticmethod(lambda: 1.0)})()   # no random hop: only the stall rule
    pressed = [hops(_pose(t, 0.0, 0.0, x=0.01 * t), walk) for t in range(12)]
    assert not any(pressed[:4]) and all(pressed[4:10])   # 4 steps with almost no progress: a 6-step jump
    moving = Hops(np.random.default_rng(0))
    moving.rng = hops.rng
    assert not any(moving(_pose(t, 0.0, 0.0, x=0.2 * t), walk) for t in range(20))


def test_fingerprint_follows_what_the_game_does():
    assert fingerprint(GameConfig()) == fingerprint(GameConfig())
    assert fingerprint(GameConfig(hud=True)) != fingerprint(GameConfig())
    assert fingerprint(GameConfig(map_seed=1)) != fingerprint(GameConfig())


def test_a_rerun_with_other_settings_is_refused_and_more_episodes_are_not(tmp_path):
    made = run_record(RecordConfig(episodes=4, steps=100), "Minetest 5.6.1")
    claim_output(tmp_path, made, what="Luanti recordings", outputs=OUTPUTS)
    (tmp_path / "luanti-0-0000.mp4").write_bytes(b"x")
    claim_output(tmp_path, run_record(RecordConfig(episodes=8, steps=100, workers=2), "Minetest 5.6.1"),
                 what="Luanti recordings", outputs=OUTPUTS)
    with pytest.raises(OutputMismatch, match="steps 100 -> 200"):
        claim_output(tmp_path, run_record(RecordConfig(steps=200), "Minetest 5.6.1"), what="Luanti recordings",
                     outputs=OUTPUTS)
    claim_output(tmp_path, run_record(RecordConfig(steps=200), "Minetest 5.6.1"), overwrite=True,
                 what="Luanti recordings", outputs=OUTPUTS)
    assert not (tmp_path / "luanti-0-0000.mp4").exists()
    assert json.loads((tmp_path / "config.json").read_text())["config"]["steps"] == 200
