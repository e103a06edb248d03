"""`ochre play` headless, and the gymnasium env over the stepper."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from live_model import make_model


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model"))


def test_headless_play_records_a_video(world, tmp_path):
    from ochre.data.video import decode_frames

    actions = tmp_path / "actions.txt"
    actions.write_text("# turn right, then walk\n" + "1 0 0 0\n" * 4 + "0 0 0 1\n" * 4 + "nan 0 0 0\n")
    out = tmp_path / "dream.mp4"
    r = subprocess.run([sys.executable, "-m", "ochre", "play", "--headless", "--checkpoint", str(world),
                        "--actions", str(actions), "--record", str(out), "--scale", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ochre play: checkpoint" in r.stderr and "9 steps" in r.stdout
    assert "non-finite actions" in r.stderr                     # said, and the loop went on
    frames = decode_frames(out.read_bytes())
    assert frames.shape == (10, 128, 128, 3)


def test_headless_play_onnxruntime_and_errors(world, tmp_path):
    actions = tmp_path / "actions.txt"
    actions.write_text("0 0 0 1\n" * 3)
    r = subprocess.run([sys.executable, "-m", "ochre", "play", "--headless", "--checkpoint", str(world),
                        "--actions", str(actions), "--backend", "onnxruntime"], capture_output=True, text=True,
                       timeout=600, env={**__import__("os").environ, "OCHRE_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "parity passed" in r.stderr and "3 steps" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ochre", "play", "--headless"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "--actions FILE" in r.stderr


def test_gym_env_passes_the_checker(world):
    gym = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    import ochre.runtime  # noqa: F401  (registers ochre/Dream-v0)

    env = gym.make("ochre/Dream-v0", checkpoint=str(world))
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    first = [env.step(np.array([0.5, 0, 0, 1], np.float32))[0] for _ in range(3)]
    again, _ = env.reset(seed=3)
    second = [env.step(np.array([0.5, 0, 0, 1], np.float32))[0] for _ in range(3)]
    assert np.array_equal(obs, again) and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert env.action_space.shape == (4,) and env.spec.max_episode_steps == 256


def test_a_damaged_export_is_refused_in_one_line(world, tmp_path):
    """An export folder plays only as it passed parity: altered weights or a damaged graph are
    refused by their manifest hashes in one line ending "re-export", with a non-zero exit."""
    import os

    folder, actions = tmp_path / "onnx", tmp_path / "actions.txt"
    actions.write_text("0 0 0 1\n")
    env = {**os.environ, "OCHRE_CACHE": str(tmp_path / "cache")}

    def ochre(*argv):
        return subprocess.run([sys.executable, "-m", "ochre", *argv], capture_output=True, text=True, timeout=600,
                              env=env)

    r = ochre("export", str(world), "--out", str(folder))
    assert r.returncode == 0, r.stderr[-2000:]
    play = ("play", "--headless", "--backend", "onnxruntime", "--onnx", str(folder), "--actions", str(actions))
    assert ochre(*play).returncode == 0
    data = folder / "step.onnx.data"
    with open(data, "r+b") as f:                         # 4 KiB of other weights
        f.seek(data.stat().st_size // 2)
        f.write(os.urandom(4096))
    r = ochre(*play)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"ochre play: {data}: damaged or altered (sha256 differs from "
                                             "manifest.json); re-export"]
    graph = folder / "step.onnx"
    graph.write_bytes(graph.read_bytes()[:100])
    data.unlink()
    r = ochre(*play)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip().endswith("re-export")
