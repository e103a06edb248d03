"""`ochre prepare` on recordings written by hand from the MineRL and VPT documentation
(tests/handmade.py): every kept frame is the state its tick names, GUI-open ticks turn nothing,
null actions stay as no-ops, and 16:9 video is centre-cropped."""

from __future__ import annotations

import numpy as np
import pytest
from handmade import GUI_OPEN, NULL, minerl_trajectory, vpt_recording
from recordings import read_index_frames

from ochre.actions import kept_ticks
from ochre.data.loader import WindowDataset
from ochre.data.prepare import PrepareConfig, prepare
from ochre.data.shards import load_npy
from ochre.data.video import decode_frames


def _prepared(out) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frames, actions, ticks) of every prepared sample, in order."""
    return [(decode_frames(s["mp4"]), load_npy(s["actions.npy"]), load_npy(s["ticks.npy"]))
            for s in WindowDataset(out, window=2, split="all", shuffle=False).samples()]


def test_handwritten_minerl_every_kept_frame_is_video_frame_L_plus_tick(tmp_path):
    n, loading = 40, 5
    _, camera = minerl_trajectory(tmp_path / "src", n, loading)
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(fps=8, segment=8), workers=1, progress=False)
    samples = _prepared(tmp_path / "out")
    assert len(samples) == 3                                      # 17 kept frames in segments of 8
    for frames, _, ticks in samples:
        np.testing.assert_array_equal(read_index_frames(frames), loading + ticks)
    ticks = np.concatenate([samples[0][2]] + [s[2][1:] for s in samples[1:]])
    np.testing.assert_array_equal(ticks, kept_ticks(n + 1, 8))
    # The first window holds ticks 0 and 1: its yaw is their summed yaw, in units of 15 degrees.
    assert samples[0][1][0, 0] == pytest.approx(camera[0:2, 1].sum() / 15, abs=1e-6)


def test_handwritten_vpt_gui_open_ticks_turn_nothing_and_null_actions_stay(tmp_path):
    mp4, lines = vpt_recording(tmp_path / "src", n_frames=40)
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(fps=20), workers=1, progress=False)
    (frames, actions, ticks), = _prepared(tmp_path / "out")
    np.testing.assert_array_equal(ticks, np.arange(40))          # every frame kept, GUI and null too
    np.testing.assert_array_equal(read_index_frames(frames), ticks)
    want = np.zeros((39, 4))
    for t, line in enumerate(lines[:-1]):
        if line["isGuiOpen"]:
            continue                                               # the mouse steered a cursor
        keys = line["keyboard"]["keys"]
        # 0.15 degrees per count; one tick per model step at 20 fps; 15 degrees -> 1.0
        want[t] = [line["mouse"]["dx"] * 0.15 / 15, line["mouse"]["dy"] * 0.15 / 15,
                   ("key.keyboard.d" in keys) - ("key.keyboard.a" in keys), "key.keyboard.w" in keys]
    np.testing.assert_allclose(actions, want, atol=1e-6)
    assert all(lines[t]["mouse"]["dx"] != 0 for t in GUI_OPEN)     # the cursor did move ...
    assert not actions[list(GUI_OPEN)].any()                       # ... the camera did not
    assert not actions[list(NULL)].any() and actions[6:14].any()


def test_vpt_16x9_is_centre_cropped_by_default_and_squashed_on_request(tmp_path):
    vpt_recording(tmp_path / "src", n_frames=24)
    prepare(tmp_path / "src", tmp_path / "crop", PrepareConfig(fps=20), workers=1, progress=False)
    prepare(tmp_path / "src", tmp_path / "squash", PrepareConfig(fps=20, crop="squash"), workers=1,
            progress=False)
    (cropped, _, ticks), = _prepared(tmp_path / "crop")
    (squashed, _, _), = _prepared(tmp_path / "squash")
    assert cropped.shape == squashed.shape == (24, 64, 64, 3)
    np.testing.assert_array_equal(read_index_frames(cropped), ticks)
    assert (read_index_frames(squashed) != ticks).any()            # the bands smeared over the index
