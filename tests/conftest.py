"""Shared fixtures: small recordings made on the spot (nothing is downloaded)."""

from __future__ import annotations

import os

import pytest
from recordings import index_frames, random_controls


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Exports and the newest-demo pointer go to a cache of the suite's own: a test's `ochre demo`
    must not become the user's default model (tests that need a cache of their own still set one)."""
    os.environ["OCHRE_CACHE"] = str(tmp_path_factory.mktemp("ochre-cache"))


@pytest.fixture(scope="session")
def live_world(tmp_path_factory):
    """A playable random-weight model (tests/live_model.py) shared by the modules that only read it,
    with its exports below made once per run: each costs tens of seconds on these CPUs."""
    from live_model import make_model

    return make_model(tmp_path_factory.mktemp("live-model"))


@pytest.fixture(scope="session")
def onnx_b1(live_world, tmp_path_factory):
    """live_world's fp32 ONNX export at batch 1, with the full 64-step parity check."""
    from ochre.export.cli import export_model
    from ochre.models.lookup import from_run

    out = tmp_path_factory.mktemp("onnx-b1")
    export_model(from_run(live_world), out, dtype="fp32", batch=1, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def aoti_b1(live_world, tmp_path_factory):
    """live_world's AOTInductor packages at batch 1, as `ochre play`/`ochre bench` make them on demand:
    three compiles (about 35 s on 2 cores), checked against eager torch over 6 steps."""
    from ochre.models.lookup import from_run
    from ochre.runtime.exports import ensure_aoti

    return ensure_aoti(from_run(live_world), batch=1, out=tmp_path_factory.mktemp("aoti") / "b1", check_steps=6,
                       log=lambda m: None)


@pytest.fixture(autouse=True)
def _exact(request):
    """Tests marked `exact` compare results bit for bit, and run under the settings that make such a
    claim checkable: torch.use_deterministic_algorithms(True) (an op without a deterministic
    implementation raises instead of quietly varying from run to run), TF32 off. They pin their
    work to the CPU (device="cpu", `--device cpu`) on every machine: what they check (weights, RNG
    states, data position and optimizer state restored exactly; shards that decode as the model
    does) does not depend on the device, while on CUDA grid_sample's backward (the motion prior's
    warp) has no deterministic kernel at all and float index_add_ and the Triton scatter-add sum with
    atomics in no fixed order, so bitwise equality there would test the GPU's summation order. Their
    subprocesses run ochre under the same mode (exactness.DETERMINISTIC_OCHRE)."""
    if request.node.get_closest_marker("exact") is None:
        yield
        return
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before[2:]


@pytest.fixture
def make_minerl(tmp_path):
    """make_minerl(name, n, loading) -> folder: index-encoded MineRL v0 trajectory."""
    from ochre.data.synth import write_minerl

    def make(name: str, n: int = 60, loading: int = 3, seed: int = 0, root=None):
        folder = (root or tmp_path / "src") / name
        camera, keys = random_controls(n, seed)
        write_minerl(folder, index_frames(loading + n + 1), camera, keys, loading=loading)
        return folder
    return make


@pytest.fixture
def make_vpt(tmp_path):
    """make_vpt(name, n) -> mp4 path: index-encoded VPT recording with n + 1 frames."""
    from ochre.data.synth import write_vpt

    def make(name: str, n: int = 60, seed: int = 0, root=None):
        stem = (root or tmp_path / "src") / name
        camera, keys = random_controls(n, seed)
        write_vpt(stem, index_frames(n + 1), camera, keys)
        return stem.with_suffix(".mp4")
    return make


# After the whole suite, a native library loaded into this process (onnxruntime, AOTInductor
# packages, SDL, gloo: each alone exits cleanly) aborts in its destructors at interpreter
# shutdown ("free(): invalid pointer"), turning a green run into exit code 134. The results are
# final by then, so leave with pytest's own exit status without running those destructors.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
