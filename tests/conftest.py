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
