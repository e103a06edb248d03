"""mp4 encoding is a pure function of the frames: prepare and synth promise bit-stable files."""

import io
import subprocess
import sys

import av
import numpy as np
import pytest

from ochre.data.synth.episodes import render_episode
from ochre.data.video import deterministic_simd, encode_mp4

# Run in a fresh process, whose heap evolves the same way every time: the same frames encoded again and
# again with cyclic garbage left between encodes (as a decord reader's bytes are in a long process).
# With x264's SIMD code at 48 px every encode after the first gave other bytes than the first.
_REENCODE = """
import sys
import numpy as np
from ochre.data.synth.episodes import render_episode
from ochre.data.video import encode_mp4
size = int(sys.argv[1])
frames = np.ascontiguousarray(render_episode(5, 0, 10, size, mouse_counts=True).frames)
first = encode_mp4(frames, 20)
other = 0
for i in range(60):
    if i % 10 == 0:
        box = {"buffer": bytearray(8204)}
        box["self"] = box
        del box
    other += encode_mp4(frames, 20) != first
open(sys.argv[2], "wb").write(first)
print(other)
"""


@pytest.mark.parametrize("size", [48, 32])
def test_the_same_frames_give_the_same_bytes_whatever_the_heap_held(size, tmp_path):
    frames = render_episode(5, 0, 10, size, mouse_counts=True).frames
    out = subprocess.run([sys.executable, "-c", _REENCODE, str(size), str(tmp_path / "first.mp4")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == 0, f"{out.stdout.strip()} of 60 encodes of the same {size} px frames gave other bytes"
    first = (tmp_path / "first.mp4").read_bytes()
    assert encode_mp4(frames, 20) == first                               # and this process writes them too
    with av.open(io.BytesIO(first)) as container:                        # (decord cannot read 48 px wide)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    mse = np.mean((decoded.astype(float) - frames) ** 2)
    assert decoded.shape == frames.shape and 10 * np.log10(255**2 / mse) > 25   # the frames (30-38 dB here; noise ~10)


def test_the_cards_frames_keep_x264s_simd_code():
    assert deterministic_simd(64, 64) and deterministic_simd(128, 64)
    assert not deterministic_simd(32, 32) and not deterministic_simd(64, 32) and not deterministic_simd(48, 64)
