"""Shared fixtures: small recordings made on the spot (nothing is downloaded)."""

from __future__ import annotations

import pytest
from recordings import index_frames, random_controls


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
