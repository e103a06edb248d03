"""mp4 encoding is a pure function of the frames: prepare and synth promise bit-stable files."""

import io

import av
import numpy as np
import pytest

from ochre.data.synth.episodes import render_episode
from ochre.data.video import deterministic_mbtree, encode_mp4


def _disturb_the_heap():
    """Cyclic garbage holding a buffer: the collector frees it at some later allocation, maybe
    inside the next encode (as a decord reader's bytes are freed in a long process)."""
    box = {"buffer": bytearray(8204)}
    box["self"] = box


@pytest.mark.parametrize("size", [48, 16])
def test_the_same_frames_give_the_same_bytes_whatever_the_heap_held(size):
    # With x264's macroblock tree on, 48 px frames gave other bytes in 499 of 500 such encodes.
    frames = render_episode(5, 0, 10, size, mouse_counts=True).frames
    first = encode_mp4(frames, 20)
    for i in range(60):
        if i % 3 == 0:
            _disturb_the_heap()
        assert encode_mp4(frames, 20) == first, f"encode {i} of the same {size} px frames gave other bytes"
    with av.open(io.BytesIO(first)) as container:                   # (decord cannot read 48 px wide)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    mse = np.mean((decoded.astype(float) - frames) ** 2)
    assert decoded.shape == frames.shape and 10 * np.log10(255**2 / mse) > 25   # the frames (30-38 dB here; noise ~10)


def test_the_cards_frames_keep_the_macroblock_tree():
    assert deterministic_mbtree(64, 64) and deterministic_mbtree(128, 64)
    assert not deterministic_mbtree(32, 32) and not deterministic_mbtree(64, 32) and not deterministic_mbtree(48, 64)
