"""`ochre data check` on synthetic recordings: aligned data peaks at lag 0, shifted data does not."""

from __future__ import annotations

import numpy as np
import pytest

from ochre.cli import main
from ochre.data.check import CANNOT_CHECK, check, phase_shift
from ochre.data.prepare import PrepareConfig, prepare


def test_phase_shift_measures_known_translations():
    rng = np.random.default_rng(0)
    big = rng.random((96, 96))
    kernel = np.ones(5) / 5      # smooth, like rendered terrain rather than white noise
    for axis in (0, 1):
        big = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), axis, big)
    base = big[16:80, 16:80]
    moved = big[16 + 3:80 + 3, 16 - 2:80 - 2]            # content moves up 3 px, right 2 px
    frames = (np.stack([base, moved])[..., None].repeat(3, -1) * 255).astype(np.uint8)
    np.testing.assert_allclose(phase_shift(frames), [[-3, 2]], atol=0.25)


@pytest.fixture(scope="module")
def synth_src(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    assert main(["synth", str(root / "src"), "--episodes", "6", "--steps", "240", "--seed", "3"]) == 0
    return root


def test_aligned_synthetic_data_peaks_at_lag_zero(synth_src, capsys):
    prepare(synth_src / "src", synth_src / "aligned", PrepareConfig(), progress=False)
    assert main(["data", "check", str(synth_src / "aligned")]) == 0
    result = check(synth_src / "aligned")
    assert result["yaw_peak_lag"] == 0 and result["pitch_peak_lag"] == 0
    assert result["yaw"][5] > 0.5 and result["pitch"][5] > 0.5     # strong, not merely the largest
    assert "OK" in capsys.readouterr().out


def test_shifted_actions_are_detected(synth_src, tmp_path):
    # Frames lagging their actions by 5 ticks (2 kept frames at 8 fps): what forgetting to skip
    # 5 loading frames does. The peak must move to a positive lag.
    import shutil

    shifted = tmp_path / "src"
    shutil.copytree(synth_src / "src", shifted)
    for npz in shifted.rglob("rendered.npz"):
        with np.load(npz) as z:
            arrays = dict(z)
        for k, v in arrays.items():
            if k.startswith("action$"):
                arrays[k] = np.roll(v, -5, axis=0)   # action t is what happened at t + 5
        np.savez(npz, **arrays)
    prepare(shifted, tmp_path / "out", PrepareConfig(), progress=False)
    result = check(tmp_path / "out")
    assert not result["ok"]
    assert result["yaw_peak_lag"] in (1, 2, 3) and result["pitch_peak_lag"] in (1, 2, 3)
    assert main(["data", "check", str(tmp_path / "out")]) == 1


def test_data_without_pitch_movement_cannot_be_checked(tmp_path, capsys):
    # Hand-made clips in which the camera only ever turns sideways: pitch has no variance, so
    # no lag can be told from another. That is "cannot check" (exit 3), not a misalignment (1).
    from recordings import index_frames, random_controls

    from ochre.data.synth import write_minerl

    for i in range(2):
        camera, keys = random_controls(60, i)
        camera[:, 0] = 0.0                                             # pitch never moves
        write_minerl(tmp_path / "src" / f"t{i}", index_frames(61), camera, keys, loading=0)
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(), workers=1, progress=False)
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "out")]) == CANNOT_CHECK == 3
    err = capsys.readouterr().err
    assert "cannot check: no pitch movement in the data" in err and "MISALIGNED" not in err
    assert check(tmp_path / "out")["still"] == ["pitch"]


def test_check_runs_on_vpt_layout_data(tmp_path):
    assert main(["synth", str(tmp_path / "src"), "--episodes", "3", "--steps", "200", "--seed", "3",
                 "--layout", "vpt"]) == 0
    prepare(tmp_path / "src", tmp_path / "out", PrepareConfig(), progress=False)
    assert main(["data", "check", str(tmp_path / "out")]) == 0
    result = check(tmp_path / "out")
    assert result["ok"] and result["yaw"][5] > 0.5 and result["pitch"][5] > 0.5
