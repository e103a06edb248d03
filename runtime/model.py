"""Which model to play, and its files: a world-model run, the newest `ochre demo`, or the shipped one.

A playable model is a tokenizer checkpoint, a dynamics checkpoint, the frame rate its actions were
encoded at (DESIGN §3.2) and some real context frames to start dreams from. Resolution order when
no model is named (DESIGN §7): the newest `ochre demo` output, else the model shipped in the
package; every entry point prints which it took (`Model.origin`).

Where a dynamics run's tokenizer comes from: the run records the hash of the tokenizer its token
shards were made with (extra.identity.tokens); the token-shard index beside the run (same hash)
names that tokenizer's checkpoint. Hashes are checked, so a retrained tokenizer is never paired
with a dynamics model trained on another one's codes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHIPPED = Path(__file__).resolve().parent / "shipped"
DEFAULT_FPS = 8.0


class ModelError(ValueError):
    """A model folder that cannot be played; the message says what to pass instead."""


@dataclass
class Model:
    world: Path                      # dynamics checkpoint folder (config.json + model.safetensors)
    tokenizer: Path                  # tokenizer checkpoint folder
    fps: float                       # model frames per second: the action window of §3.2
    origin: str                      # said to the user: where this model came from
    contexts: Path | None = None     # .npy (N, H, W, 3) or an eval rollouts.npz
    info: dict = field(default_factory=dict)

    def context_frames(self) -> np.ndarray:
        """Real frames to start dreams from: uint8 (N, 64, 64, 3)."""
        path = self.contexts if self.contexts is not None else SHIPPED / "contexts.npy"
        if path.suffix == ".npz":
            with np.load(path) as z:
                real = z["real"]                                          # (N, S+1, H, W, 3)
            return np.ascontiguousarray(real[:, ::8].reshape(-1, *real.shape[2:]))
        return np.load(path)


def cache_dir() -> Path:
    """Where ochre keeps exports it made for itself and the pointer to the newest demo."""
    root = os.environ.get("OCHRE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ochre"
    return Path(root)


def remember_demo(out: Path) -> None:
    """Called by `ochre demo`: its output becomes the default model."""
    from ochre.io import write_json_atomic

    write_json_atomic(cache_dir() / "last_demo.json", {"out": str(Path(out).resolve())})


def _checkpoint_meta(path: Path) -> dict:
    from ochre.train.checkpoint import read_checkpoint_config

    return read_checkpoint_config(path)


def _tokens_indexes(run: Path) -> list[Path]:
    """Token-shard indexes near a run: its siblings' and their parents' children."""
    seen, out = set(), []
    for root in (run.parent, run.parent.parent):
        for idx in sorted(root.glob("*/index.json")):
            if idx not in seen:
                seen.add(idx)
                out.append(idx)
    return out


def from_run(world, tokenizer=None, origin: str | None = None) -> Model:
    """A dynamics run (or checkpoint) folder, its tokenizer found as the module doc says."""
    from ochre.train.checkpoint import CheckpointError, checkpoint_hash

    world = Path(world)
    try:
        meta = _checkpoint_meta(world)
    except CheckpointError as e:
        raise ModelError(str(e)) from None
    if meta["kind"] != "dynamics":
        raise ModelError(f"{world}: holds a {meta['kind']!r} checkpoint; pass a world-model run (`ochre train --out`)")
    ckpt = Path(meta["path"])
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    want = meta.get("extra", {}).get("identity", {}).get("tokens")
    fps, contexts, tok = DEFAULT_FPS, None, Path(tokenizer) if tokenizer else None
    for idx in _tokens_indexes(run):
        try:
            index = json.loads(idx.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if index.get("kind") != "tokens" or (want and index.get("tokenizer") != want):
            continue
        fps = float(index.get("fps", DEFAULT_FPS))
        found = Path(index.get("tokenizer_checkpoint", ""))
        if tok is None and (found / "config.json").is_file() and checkpoint_hash(found) == index.get("tokenizer"):
            tok = found
        break
    if tok is None:
        raise ModelError(f"{world}: cannot find the tokenizer its token shards were made with (hash {want}); "
                         "pass --tokenizer DIR")
    rollouts = run.parent / "eval" / "rollouts.npz"
    if rollouts.is_file():
        contexts = rollouts
    return Model(world=ckpt, tokenizer=Path(_checkpoint_meta(tok)["path"]), fps=fps,
                 origin=origin or f"checkpoint {world}", contexts=contexts)


def newest_demo() -> Path | None:
    """The output folder of the newest `ochre demo` on this machine that holds a world model."""
    pointer = cache_dir() / "last_demo.json"
    candidates = []
    if pointer.is_file():
        try:
            candidates.append(Path(json.loads(pointer.read_text())["out"]))
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    candidates.append(Path("demo-out"))                          # the demo's default --out
    for out in candidates:
        if (out / "world" / "checkpoints").is_dir() and (out / "tokenizer").is_dir():
            return out
    return None


def shipped() -> Model:
    """The tiny model shipped inside the package (see ochre.runtime.ship)."""
    info_path = SHIPPED / "MODEL.json"
    if not info_path.is_file():
        raise ModelError("this install has no shipped model; pass --checkpoint DIR or run `ochre demo`")
    info = json.loads(info_path.read_text())
    return Model(world=SHIPPED / "world", tokenizer=SHIPPED / "tokenizer", fps=float(info["fps"]),
                 origin=f"the shipped model ({info.get('made_by', 'ochre demo')})",
                 contexts=SHIPPED / "contexts.npy", info=info)


def resolve(checkpoint=None, tokenizer=None) -> Model:
    """Explicit run -> newest demo -> shipped (DESIGN §7)."""
    if checkpoint is not None:
        return from_run(checkpoint, tokenizer)
    demo = newest_demo()
    if demo is not None:
        try:
            return from_run(demo / "world", tokenizer, origin=f"the newest `ochre demo` model ({demo})")
        except ModelError:
            pass                                    # a half-finished demo: fall through to the shipped one
    return shipped()


def load(model: Model, device="cpu", impl: str = "auto"):
    """(tokenizer, dynamics, SamplingConfig) on `device`, eval mode."""
    from ochre.train.checkpoint import load_dynamics, load_tokenizer

    tokenizer = load_tokenizer(model.tokenizer, device, impl=impl)
    dynamics, sampling, _ = load_dynamics(model.world, device, impl=impl)
    return tokenizer, dynamics, sampling
