"""Native deploy (DESIGN §8): AOTInductor export and its parity with eager torch, the `native`
runtime backend, the action-file format, and the Triton kernels compiled ahead of time.
The C++ loop itself is tested by ctest (CMakeLists.txt), which `.ci/run` builds and runs."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _fixture_module():
    spec = importlib.util.spec_from_file_location("ctest_fixture", ROOT / "native" / "ctest_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_action_file_format(tmp_path):
    from ochre.runtime.native import clean_actions, read_actions

    path = tmp_path / "a.txt"
    path.write_text("# yaw pitch move_x move_z\n0.5 -0.5 0 1\n\n0.25,0.1, -1,0  # comma separated\n")
    np.testing.assert_array_equal(read_actions(path), np.array([[0.5, -0.5, 0, 1], [0.25, 0.1, -1, 0]], np.float32))
    path.write_text("0 0 0 0\n1 2 3\n")
    with pytest.raises(ValueError, match=r"a\.txt:2: expected 4 numbers"):
        read_actions(path)
    a = clean_actions([[float("nan"), 2.0, -3.0, 0.5]], 1)
    assert a.tolist() == [[0.0, 1.0, -1.0, 0.5]]
    assert clean_actions([0.1, 0.2, 0.3, 0.4], 3).shape == (3, 4)           # one row for every player
    with pytest.raises(ValueError, match=r"actions must be \(2, 4\)"):
        clean_actions(np.zeros((3, 4)), 2)


def test_aoti_export_matches_eager_and_the_native_backend_replays(tmp_path):
    """Export a small random-weight model at batch 1 (three AOTInductor compiles: about a minute on
    2 cores): the export's own parity check passes, the Python `native` backend is deterministic
    for a seed, and its rollout replays in eager torch with tokens equal up to counted near-ties."""
    from ochre.export.aoti import export_aoti, replay_eager
    from ochre.export.graph import DecodeGraph, StepGraph
    from ochre.runtime.native import NativeStepper
    from ochre.train.checkpoint import load_dynamics, load_tokenizer

    _fixture_module().make_runs(tmp_path)
    m = export_aoti(tmp_path / "world", tmp_path / "pkg", tokenizer=tmp_path / "tokenizer", batch=1, check_steps=6)
    assert {f.name for f in (tmp_path / "pkg").iterdir()} >= {"encode.pt2", "step.pt2", "decode.pt2", "shapes.txt",
                                                              "context.npy", "manifest.json"}
    p = m["parity"]
    assert p["step"]["bad"] == 0 and p["encode"]["bad"] == 0 and p["max_abs_err"]["frames"] <= 1

    stepper = NativeStepper(tmp_path / "pkg", seed=3)
    context = np.load(tmp_path / "pkg" / "context.npy")
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 4)).astype(np.float32)
    frames, tokens = stepper.rollout(context, actions)
    assert frames.shape == (11, 1, 64, 64, 3) and frames.dtype == np.uint8 and tokens.shape == (11, 1, 16, 16)
    again, _ = stepper.rollout(context, actions)
    np.testing.assert_array_equal(frames, again)                              # reset reseeds the noise
    with pytest.raises(ValueError, match="context frames must be uint8"):
        stepper.reset(context[..., :2])

    model, sampling, _ = load_dynamics(tmp_path / "world", impl="torch")
    gen = torch.Generator().manual_seed(3)
    noise = torch.stack([torch.rand(1, 16, 16, generator=gen) for _ in actions])
    report = replay_eager(StepGraph(model, sampling), DecodeGraph(load_tokenizer(tmp_path / "tokenizer")),
                          tokens, frames, torch.from_numpy(actions)[:, None], noise)
    assert report["step"]["bad"] == 0


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton's compiler")
def test_triton_kernels_compile_ahead_of_time_for_sm90(tmp_path):
    """Compile-only evidence for the CUDA targets: the nearest-code search and the FiLM-GRU step
    become C launchers with sm_90 cubins embedded (no GPU needed), which compile as C where the
    CUDA headers are present; the reference values the C++ test checks are written beside them."""
    script = ROOT / "native" / "cuda" / "aot_compile.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path), "--arch", "90"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("nearest_code_f32", "film_gru_fwd_f32"):
        spec = (tmp_path / "gen" / f"{name}_spec.c").read_text()
        assert "cuLaunchKernel" in spec and "unsigned char" in spec             # launcher + embedded cubin
        # triton's linker spells the types CUresult/CUstream or through its TT_ResultTy/TT_StreamTy typedefs
        header = (tmp_path / f"{name}.h").read_text()
        assert re.search(rf"(CUresult|TT_ResultTy) {name}_default\((CUstream|TT_StreamTy) stream", header), header
    assert np.load(tmp_path / "ref" / "idx.npy").shape == (1000,)
    cuda_h = [p for p in (Path("/usr/local/cuda/include"), Path("/usr/include")) if (p / "cuda.h").is_file()]
    if not cuda_h or shutil.which("cc") is None:
        pytest.skip("no cuda.h or C compiler here: the cubins were built, the launchers not compiled")
    for c in [*tmp_path.glob("*.c"), *(tmp_path / "gen").glob("*.c")]:
        r = subprocess.run(["cc", "-fsyntax-only", f"-I{cuda_h[0]}", f"-I{tmp_path}", str(c)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
