"""Source recordings (docs/data.md#recordings): find them, validate them, align frames with actions.

Two layouts:
  MineRL v0  DIR/{recording.mp4, rendered.npz, metadata.json}; the video starts with
             L = true_video_frame_count - (N + 1) loading frames; state t = frame L + t.
  VPT        NAME.mp4 beside NAME.jsonl, one action per video frame, no loading frames.
             Ticks with a GUI open (isGuiOpen) move the cursor, not the player: no camera, no walking.
             Its 640x360 video is centre-cropped to square unless crop="squash".

Every problem raises BadRecording with a reason a user can act on; the caller records it
and moves on, so one bad trajectory never costs the rest of the dataset.
Legend: N actions (ticks), N + 1 states, H W frame size.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ochre.actions import mouse_counts_to_degrees
from ochre.data.video import VideoError, read_video

MINERL_FILES = ("recording.mp4", "rendered.npz", "metadata.json")
MINERL_KEYS = ("action$camera", "action$forward", "action$back", "action$left", "action$right")
VPT_KEYS = {"key.keyboard.w": "forward", "key.keyboard.s": "back",
            "key.keyboard.a": "left", "key.keyboard.d": "right"}


class BadRecording(Exception):
    """A recording that cannot be used; str(e) is the reason written to report.json."""


@dataclass(frozen=True)
class Recording:
    layout: str        # "minerl" | "vpt"
    path: Path         # trajectory folder (minerl) or the .mp4 (vpt)
    name: str          # path relative to the source root, used in keys and reports


@dataclass
class Trajectory:
    frames: np.ndarray     # (N+1, H, W, 3) uint8, states 0..N (loading frames already skipped)
    camera: np.ndarray     # (N, 2) float64 degrees per tick, [pitch, yaw]
    move_x: np.ndarray     # (N,) right - left
    move_z: np.ndarray     # (N,) forward - back
    loading: int           # L, loading frames skipped at the start of the video
    notes: list[str]       # repairs made, for report.json


def find_recordings(root: str | Path) -> list[Recording]:
    """Every MineRL trajectory folder and VPT mp4+jsonl pair under root, sorted by name.

    A folder counts as MineRL if it holds any of the three MineRL files, so a trajectory
    missing one of them is still found and reported instead of silently ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"source folder {root} does not exist")
    found: dict[Path, Recording] = {}
    for marker in MINERL_FILES:
        for f in root.rglob(marker):
            found.setdefault(f.parent, Recording("minerl", f.parent, _rel(f.parent, root)))
    for f in root.rglob("*.jsonl"):
        mp4 = f.with_suffix(".mp4")
        found.setdefault(mp4, Recording("vpt", mp4, _rel(mp4, root)))
    for mp4 in root.rglob("*.mp4"):
        if mp4.name != "recording.mp4" and mp4 not in found:
            found[mp4] = Recording("vpt", mp4, _rel(mp4, root))   # reported: no .jsonl
    return sorted(found.values(), key=lambda r: r.name)


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() or "."


def load_recording(rec: Recording, size: int, crop: str = "center") -> Trajectory:
    loader = load_minerl if rec.layout == "minerl" else load_vpt
    return loader(rec.path, size, crop)


def source_bytes(rec: Recording) -> int:
    """Bytes on disk of a recording's files: a replaced or re-downloaded recording changes it."""
    files = ([rec.path / name for name in MINERL_FILES] if rec.layout == "minerl"
             else [rec.path, rec.path.with_suffix(".jsonl")])
    return sum(f.stat().st_size for f in files if f.is_file())


# ---- MineRL ---------------------------------------------------------------------------

def load_minerl(folder: Path, size: int, crop: str = "center") -> Trajectory:
    for name in MINERL_FILES:
        if not (folder / name).is_file():
            raise BadRecording(f"missing {name}")
    meta = _read_metadata(folder / "metadata.json")
    actions = _read_rendered(folder / "rendered.npz")
    n = len(actions["action$camera"])
    if n == 0:
        raise BadRecording("empty recording: rendered.npz has no actions")
    if "duration_steps" in meta and int(meta["duration_steps"]) != n:
        raise BadRecording(f"metadata.json duration_steps={meta['duration_steps']} but rendered.npz "
                           f"has {n} actions")
    frames = _decode(folder / "recording.mp4", size, crop)
    notes = []
    claimed = meta.get("true_video_frame_count")
    if claimed is None:
        claimed = len(frames)
        notes.append("true_video_frame_count missing: counted decoded frames")
    claimed = int(claimed)
    loading = claimed - (n + 1)
    if loading < 0:
        raise BadRecording(f"true_video_frame_count={claimed} < duration_steps+1={n + 1} "
                           f"(L={loading} < 0): frames and actions cannot be aligned")
    if len(frames) < claimed:
        raise BadRecording(f"recording.mp4 has {len(frames)} frames, metadata.json claims {claimed} "
                           f"(truncated video)")
    if len(frames) > claimed:
        notes.append(f"recording.mp4 has {len(frames) - claimed} frames past true_video_frame_count; ignored")
    camera = actions["action$camera"].astype(np.float64)
    move_x = actions["action$right"] - actions["action$left"]
    move_z = actions["action$forward"] - actions["action$back"]
    return Trajectory(frames[loading: loading + n + 1], camera, move_x, move_z, loading, notes)


def _read_metadata(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRecording(f"malformed metadata.json: {e}") from None
    if not isinstance(meta, dict):
        raise BadRecording("malformed metadata.json: not a JSON object")
    for key in ("true_video_frame_count", "duration_steps"):
        if key in meta and not _is_int(meta[key]):
            raise BadRecording(f"malformed metadata.json: {key}={meta[key]!r} is not an integer")
    return meta


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_rendered(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in MINERL_KEYS if k not in npz.files]
            if missing:
                raise BadRecording(f"rendered.npz lacks {', '.join(missing)}")
            arrays = {k: np.asarray(npz[k]) for k in MINERL_KEYS}
    except BadRecording:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise BadRecording(f"malformed rendered.npz: {e}") from None
    n = len(arrays["action$camera"])
    if arrays["action$camera"].shape != (n, 2):
        raise BadRecording(f"rendered.npz action$camera has shape {arrays['action$camera'].shape}, want (N, 2)")
    for k, v in arrays.items():
        if len(v) != n:
            raise BadRecording(f"rendered.npz {k} has {len(v)} entries, action$camera has {n}")
        _check_finite(v, f"rendered.npz {k}")
    return {k: v.astype(np.float64) for k, v in arrays.items()}


def _check_finite(values: np.ndarray, what: str) -> None:
    if not np.issubdtype(values.dtype, np.number):
        raise BadRecording(f"{what} is not numeric (dtype {values.dtype})")
    bad = ~np.isfinite(values.astype(np.float64))
    if bad.any():
        ticks = np.unique(np.nonzero(bad)[0])
        raise BadRecording(f"{what} has NaN/inf at {len(ticks)} ticks (first: {ticks[:5].tolist()})")


def _decode(path: Path, size: int, crop: str) -> np.ndarray:
    try:
        return read_video(path, size, crop)
    except VideoError as e:
        raise BadRecording(f"{path.name}: {e}") from None


# ---- VPT ------------------------------------------------------------------------------

def load_vpt(mp4: Path, size: int, crop: str = "center") -> Trajectory:
    jsonl = mp4.with_suffix(".jsonl")
    if not mp4.is_file():
        raise BadRecording(f"missing {mp4.name} beside {jsonl.name}")
    if not jsonl.is_file():
        raise BadRecording(f"missing {jsonl.name} beside {mp4.name}")
    camera, move_x, move_z = _read_jsonl(jsonl)
    frames = _decode(mp4, size, crop)
    n_frames, n_lines = len(frames), len(camera)
    # One action per video frame; the last frame's action leads nowhere and is unused.
    if n_lines < n_frames - 1:
        raise BadRecording(f"{jsonl.name} has {n_lines} actions for {n_frames} video frames")
    if n_lines > n_frames:
        raise BadRecording(f"{mp4.name} has {n_frames} frames but {jsonl.name} has {n_lines} actions "
                           f"(truncated video)")
    if n_frames < 2:
        raise BadRecording("empty recording: fewer than 2 frames")
    n = n_frames - 1
    return Trajectory(frames, camera[:n], move_x[:n], move_z[:n], 0, [])


def _read_jsonl(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadRecording(f"unreadable {path.name}: {e}") from None
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(_vpt_action(json.loads(line)))
        except (json.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError) as e:
            raise BadRecording(f"malformed {path.name} line {i + 1}: {e}") from None
    if not rows:
        raise BadRecording(f"empty recording: {path.name} has no actions")
    table = np.array(rows, dtype=np.float64)          # (N, 4): dy, dx, move_x, move_z
    _check_finite(table[:, :2], f"{path.name} mouse dx/dy")
    yaw, pitch = mouse_counts_to_degrees(table[:, 1], table[:, 0])
    return np.stack([pitch, yaw], axis=1), table[:, 2], table[:, 3]     # camera (N, 2) [pitch, yaw]


def _vpt_action(obj) -> tuple[float, float, float, float]:
    if obj is None:                 # a null action stays, as a no-op
        return 0.0, 0.0, 0.0, 0.0
    if obj.get("isGuiOpen"):
        # An open inventory or menu takes the mouse and keys: dx/dy move the cursor and the game
        # releases held movement keys, so the player neither turns nor walks. The frame stays.
        return 0.0, 0.0, 0.0, 0.0
    mouse = obj.get("mouse") or {}
    keys = set((obj.get("keyboard") or {}).get("keys") or [])
    held = {name for key, name in VPT_KEYS.items() if key in keys}
    return (float(mouse.get("dy", 0.0)), float(mouse.get("dx", 0.0)),
            float("right" in held) - float("left" in held),
            float("forward" in held) - float("back" in held))
