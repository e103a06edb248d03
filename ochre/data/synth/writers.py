"""Recording writers (docs/data.md#recordings): any frames and controls -> a MineRL v0 trajectory folder or a
VPT contractor pair, written atomically, so data tests can feed them hand-made frames.
Legend: L loading frames, N actions, H W frame size.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ochre.actions import TICKS_PER_SECOND, VPT_DEG_PER_COUNT
from ochre.data.synth.policy import KEY_NAMES
from ochre.data.video import encode_mp4, write_mp4
from ochre.io import write_bytes_atomic

VPT_KEYS = {"forward": "key.keyboard.w", "back": "key.keyboard.s", "left": "key.keyboard.a",
            "right": "key.keyboard.d", "jump": "key.keyboard.space",
            "sneak": "key.keyboard.left.shift", "sprint": "key.keyboard.left.control"}


def _write_folder_atomic(folder: Path, files: dict[str, bytes]) -> None:
    """Write files into a hidden temporary folder beside `folder`, then rename it into place.

    Inside the temporary folder the files carry a `.part` suffix until all are written, so a
    folder left by a crash never looks like a recording to `ochre prepare`'s search.
    """
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; remove it to write this recording again")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for name, data in files.items():
            with open(tmp / f"{name}.part", "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for name in files:
            os.replace(tmp / f"{name}.part", tmp / name)
        os.chmod(tmp, 0o755)                                # mkdtemp makes it private
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_actions(camera: np.ndarray, keys: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate (N, 2) camera and (N,) keys; return every KEY_NAMES entry (missing ones all 0)."""
    n = len(camera)
    if camera.shape != (n, 2):
        raise ValueError(f"camera must be (N, 2) [pitch, yaw] degrees, got {camera.shape}")
    unknown = set(keys) - set(KEY_NAMES)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known: {', '.join(KEY_NAMES)}")
    full = {name: np.asarray(keys.get(name, np.zeros(n)), np.int64) for name in KEY_NAMES}
    for name, values in full.items():
        if values.shape != (n,) or not np.isin(values, (0, 1)).all():
            raise ValueError(f"key {name!r} must be (N,) = ({n},) in {{0, 1}}, got shape {values.shape}")
    return full


def write_minerl(folder: str | os.PathLike, frames: np.ndarray, camera: np.ndarray,
                 keys: dict[str, np.ndarray], loading: int, *, meta: dict | None = None) -> None:
    """Write one MineRL v0 trajectory folder (recording.mp4, rendered.npz, metadata.json), atomically.

    frames: uint8 (L + N + 1, H, W, 3), the whole video: `loading` = L loading frames, then states
    0..N. camera: (N, 2) degrees per tick [pitch, yaw], stored as float32. keys: names from
    KEY_NAMES -> (N,) in {0, 1}; missing names are all 0. meta: extra metadata.json fields.
    The folder's name is the stream name. Raises FileExistsError if the folder exists.
    """
    folder = Path(folder)
    camera = np.asarray(camera)
    full = _check_actions(camera, keys)
    n = len(camera)
    if len(frames) != loading + n + 1:
        raise ValueError(f"want L + N + 1 = {loading + n + 1} frames for L={loading}, N={n}; got {len(frames)}")
    arrays = {"reward": np.zeros(n, np.float32), "action$camera": camera.astype(np.float32),
              **{f"action${name}": values for name, values in full.items()}}
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    metadata = {"stream_name": folder.name, "duration_steps": n, "duration_ms": n * 1000 // TICKS_PER_SECOND,
                "true_video_frame_count": len(frames), "success": False, "total_reward": 0.0, **(meta or {})}
    _write_folder_atomic(folder, {"recording.mp4": encode_mp4(frames, TICKS_PER_SECOND),
                                  "rendered.npz": npz.getvalue(),
                                  "metadata.json": (json.dumps(metadata, indent=2) + "\n").encode()})


def _vpt_lines(counts: np.ndarray, keys: dict[str, np.ndarray], yaw0: float, pitch0: float,
               extra: list[dict] | None = None) -> list[str]:
    """One VPT contractor JSON line per video frame: N actions, then a null action for the last frame.
    extra: N + 1 dicts of further fields, one merged into each line."""
    counts = np.concatenate([counts, np.zeros((1, 2))])                       # (N+1, 2) [dy, dx]
    held = {name: np.append(np.asarray(keys[name]), 0) for name in KEY_NAMES}   # (N+1,) each
    angles = np.concatenate([[[0.0, 0.0]], np.cumsum(counts[:-1], 0)]) * VPT_DEG_PER_COUNT   # before each action
    cursor = np.cumsum(counts, 0)                                             # mouse position, counts
    lines, before = [], set()
    for t in range(len(counts)):
        down = [key for name, key in VPT_KEYS.items() if held[name][t]]
        click = [0] if held["attack"][t] else []
        mouse = {"x": 640.0 + cursor[t, 1], "y": 360.0 + cursor[t, 0], "dx": counts[t, 1], "dy": counts[t, 0],
                 "scaledX": cursor[t, 1], "scaledY": cursor[t, 0], "dwheel": 0.0, "buttons": click,
                 "newButtons": click if t == 0 or not held["attack"][t - 1] else []}
        keyboard = {"keys": down, "newKeys": [k for k in down if k not in before], "chars": ""}
        lines.append(json.dumps({
            "mouse": mouse, "keyboard": keyboard, "isGuiOpen": False, "hotbar": 0,
            "yaw": yaw0 + angles[t, 1], "pitch": pitch0 + angles[t, 0],
            "tick": t, "milli": 1_600_000_000_000 + t * 1000 // TICKS_PER_SECOND, **(extra[t] if extra else {})}))
        before = set(down)
    return lines


def write_vpt(stem: str | os.PathLike, frames: np.ndarray, camera: np.ndarray, keys: dict[str, np.ndarray],
              *, yaw0: float = 0.0, pitch0: float = 0.0, extra: list[dict] | None = None) -> None:
    """Write a VPT contractor pair STEM.jsonl + STEM.mp4 (20 fps, no loading frames).

    frames: uint8 (N + 1, H, W, 3), states 0..N; camera: (N, 2) degrees [pitch, yaw], which must be
    whole mouse counts (multiples of VPT_DEG_PER_COUNT, to 1e-6°) so that [dy, dx] * 0.15 gives it
    back; keys: names from KEY_NAMES -> (N,) in {0, 1} (attack becomes mouse button 0).
    yaw0/pitch0 only feed the informational per-frame yaw/pitch fields; extra: N + 1 dicts of further
    fields, one per line (`ochre record luanti` adds the engine's pose). The jsonl is written first
    and the mp4 last, each atomically, so an mp4 on disk always has its jsonl.
    """
    camera = np.asarray(camera, np.float64)
    full = _check_actions(camera, keys)
    if len(frames) != len(camera) + 1:
        raise ValueError(f"want N + 1 = {len(camera) + 1} frames for N={len(camera)} actions; got {len(frames)}")
    counts = np.round(camera / VPT_DEG_PER_COUNT)
    if np.abs(counts * VPT_DEG_PER_COUNT - camera).max(initial=0.0) > 1e-6:
        raise ValueError("camera is not whole VPT mouse counts; quantise it (policy(quantum=VPT_DEG_PER_COUNT))")
    stem = os.fspath(stem)
    if extra is not None and len(extra) != len(frames):
        raise ValueError(f"want one extra dict per frame ({len(frames)}); got {len(extra)}")
    lines = _vpt_lines(counts, full, yaw0, pitch0, extra)
    write_bytes_atomic(stem + ".jsonl", ("\n".join(lines) + "\n").encode())
    write_mp4(stem + ".mp4", frames, TICKS_PER_SECOND)
