"""Recordings written by hand from the formats' own documentation, not by ochre's writers
(ochre.data.synth), so a misreading shared by our writer and our reader cannot hide.

MineRL v0 (minerl.readthedocs.io, "MineRL Dataset"; the `minerl.data` loader): a trajectory
folder `<stream_name>/` under an environment folder such as `MineRLTreechop-v0/`, holding
  recording.mp4   the POV video; it starts with loading frames, so it has
                  true_video_frame_count = L + N + 1 frames for N steps
  rendered.npz    `reward` (N,), `action$<key>` (N,) for every key, `action$camera` (N, 2) float
                  degrees [pitch, yaw], plus environment-specific arrays (`action$place` strings,
                  `observation$compassAngle`, ...) that a reader must ignore
  metadata.json   {"duration_ms", "duration_steps", "success", "total_reward",
                   "true_video_frame_count", "stream_name", ...}
VPT contractor data (github.com/openai/Video-Pre-Training, "Contractor Demonstrations"):
`<name>.mp4` (640x360, 20 fps) beside `<name>.jsonl`, one JSON object per video frame:
  {"mouse": {"x", "y", "dx", "dy", "scaledX", "scaledY", "dwheel", "buttons", "newButtons"},
   "keyboard": {"keys", "newKeys", "chars"}, "isGuiOpen", "isGuiInventory", "hotbar", "yaw",
   "pitch", "xpos", "ypos", "zpos", "tick", "milli", ...}
with mouse dx/dy in raw counts (0.15 degrees each) and key names such as "key.keyboard.w".
A null action is an object with no key, no button and no mouse motion. While a GUI is open
(isGuiOpen: inventory, crafting table, menu) the mouse moves a cursor, not the camera.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
from recordings import index_frames


def write_h264(path: Path, frames: np.ndarray, fps: int = 20) -> None:
    """Plain H.264, yuv420p, as game capture tools write it (not ochre's yuv444 clip settings)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def minerl_trajectory(root: Path, n: int = 40, loading: int = 5) -> tuple[Path, np.ndarray]:
    """MineRLTreechop-v0/<stream>/ with L loading frames; every video frame spells its own index.

    Returns (folder, camera (N, 2) [pitch, yaw] degrees as stored)."""
    stream = "v3_absolute_grape_changeling-7_14600-16079"
    folder = root / "MineRLTreechop-v0" / stream
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    write_h264(folder / "recording.mp4", index_frames(loading + n + 1))
    camera = rng.uniform(-4, 4, (n, 2)).astype(np.float32)
    keys = {k: (rng.random(n) < 0.3).astype(np.int64) for k in
            ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")}
    arrays = {"reward": np.zeros(n, np.float32), "action$camera": camera,
              **{f"action${k}": v for k, v in keys.items()},
              "action$place": np.array(["none"] * n),                         # strings: ignored
              "observation$compassAngle": rng.uniform(-180, 180, n).astype(np.float32)}
    np.savez_compressed(folder / "rendered.npz", **arrays)
    (folder / "metadata.json").write_text(json.dumps({
        "duration_ms": n * 50, "duration_steps": n, "success": True, "total_reward": 0.0,
        "true_video_frame_count": loading + n + 1, "stream_name": stream}))
    return folder, camera


GUI_OPEN = range(14, 22)        # ticks with the inventory open
NULL = (3, 4, 5, 30)            # ticks with a null action


def vpt_recording(root: Path, n_frames: int = 40, width: int = 128, height: int = 72) -> tuple[Path, list[dict]]:
    """A 16:9 VPT pair: the frame index is spelled in the centre square; the side bands hold a
    pattern that a squash would smear over it. Null actions at NULL, an open inventory over
    GUI_OPEN (the mouse still moves: dx/dy steer the cursor). Returns (mp4, the JSON lines)."""
    side = height
    x0 = (width - side) // 2
    frames = np.zeros((n_frames, height, width, 3), np.uint8)
    frames[:, :, x0:x0 + side] = index_frames(n_frames, side)
    frames[:, ::4, :x0] = 255                                   # stripes in the bands only
    frames[:, ::4, x0 + side:] = 255
    stem = root / "cheeky-cornflower-setter-02e496ce4abb-20220421-092639"
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_h264(stem.with_suffix(".mp4"), frames)
    rng = np.random.default_rng(3)
    lines, x, y = [], 640.0, 360.0
    for t in range(n_frames):
        dx, dy = (0, 0) if t in NULL else (int(rng.integers(-60, 61)), int(rng.integers(-30, 31)))
        keys = [] if t in NULL else [k for k in ("key.keyboard.w", "key.keyboard.a", "key.keyboard.d")
                                     if rng.random() < 0.4]
        if t == GUI_OPEN.start - 1:
            keys = keys + ["key.keyboard.e"]                    # opens the inventory
        x, y = x + dx, y + dy
        lines.append({
            "mouse": {"x": x, "y": y, "dx": float(dx), "dy": float(dy), "scaledX": x - 640, "scaledY": y - 360,
                      "dwheel": 0.0, "buttons": [], "newButtons": []},
            "keyboard": {"keys": keys, "newKeys": keys, "chars": ""},
            "isGuiOpen": t in GUI_OPEN, "isGuiInventory": t in GUI_OPEN, "hotbar": 0,
            "yaw": 0.0, "pitch": 0.0, "xpos": 0.5, "ypos": 64.0, "zpos": 0.5,
            "tick": t, "milli": 1650533199000 + 50 * t})
    stem.with_suffix(".jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return stem.with_suffix(".mp4"), lines
