"""Which model to play, and its files: a world-model run, the newest `ochre demo`, or the shipped one.

A playable model is a tokenizer checkpoint, a dynamics checkpoint, the frame rate its actions were
encoded at (docs/data.md#actions) and some real context frames to start dreams from. The order when
no model is named (docs/runtime.md#which-model): the newest `ochre demo` output, else the model
shipped in the package; every entry point prints which it took (`Model.origin`), and a demo that
cannot be played is skipped with a line saying why.

Where a world-model run's tokenizer comes from: the run records the token shards it trained on
(`tokens_dir`, relative to the run folder) and the hash of the tokenizer that made them; the token
shards' index names that tokenizer's checkpoint (relative to the index). Hashes are checked, so a
retrained tokenizer is never paired with a world model trained on another one's codes; a tokenizer
given explicitly must make the found one's codes (a refined decoder, `Tokenizer.codes_digest`). Recorded
paths resolve from any working directory (ochre.io.recorded_paths). A shipped model's folder (MODEL.json,
tokenizer/, world/: `ochre/shipped`, or a copy of it) holds no token shards: naming its world/ takes its
tokenizer/, frame rate and context frames, as `shipped()` does.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ochre.io import recorded_paths, write_json_atomic
from ochre.models.checkpoint import CheckpointError, checkpoint_hash, read_checkpoint_config

SHIPPED = Path(__file__).resolve().parent.parent / "shipped"
DEFAULT_FPS = 8.0


class ModelError(ValueError):
    """A model folder that cannot be played; the message says what was searched and what to pass."""


@dataclass
class Model:
    world: Path                      # dynamics checkpoint folder (config.json + model.safetensors)
    tokenizer: Path                  # tokenizer checkpoint folder
    fps: float                       # model frames per second: the action window of docs/data.md#actions
    origin: str                      # said to the user: where this model came from
    contexts: Path | None = None     # .npy (N, H, W, 3) or an eval rollouts.npz
    info: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """`origin` with every path cut to its last folder: what results files record, so they name the
        model without naming the machine they ran on (the world hash beside it says which one)."""
        return re.sub(r"(?<![\w.-])/[^\s()]*", lambda m: Path(m.group(0)).name or "/", self.origin)

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
    write_json_atomic(cache_dir() / "last_demo.json", {"out": str(Path(out).resolve())})


def _token_indexes(run: Path, recorded: str | None) -> list[Path]:
    """Token-shard indexes a run may have trained on: the one it recorded, then its siblings' and
    their parents' children (runs made before the record existed)."""
    out = [p / "index.json" for p in recorded_paths(recorded, run)]
    for root in (run.parent, run.parent.parent):
        out += sorted(root.glob("*/index.json"))
    return list(dict.fromkeys(p.resolve() for p in out))


def _tokenizer_of(index_path: Path, index: dict) -> Path | None:
    """The tokenizer checkpoint a token index names, if it is there with the hash the index records."""
    for path in recorded_paths(index.get("tokenizer_checkpoint"), index_path.parent):
        try:
            if checkpoint_hash(path) == index.get("tokenizer"):
                return path
        except (CheckpointError, OSError):
            continue
    return None


def from_run(world, tokenizer=None, origin: str | None = None) -> Model:
    """A world-model run (or checkpoint) folder, its tokenizer found as the module doc says (or
    `tokenizer`, a checkpoint or run folder, given explicitly)."""
    world = Path(world)
    try:
        meta = read_checkpoint_config(world)
    except CheckpointError as e:
        raise ModelError(str(e)) from None
    if meta["kind"] != "dynamics":
        raise ModelError(f"{world}: holds a {meta['kind']!r} checkpoint; pass a world-model run (`ochre train --out`)")
    ckpt = Path(meta["path"])
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    inputs = meta.get("extra", {}).get("run", {}).get("inputs", {})
    want = inputs.get("tokenizer")
    fps, tok, searched = DEFAULT_FPS, None, []
    for idx in _token_indexes(run, meta.get("extra", {}).get("tokens_dir")):
        try:
            index = json.loads(idx.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if index.get("kind") != "tokens" or (want and index.get("tokenizer") != want):
            continue
        fps = float(index.get("fps", DEFAULT_FPS))
        found = _tokenizer_of(idx, index)
        searched.append(f"{idx} (names {index.get('tokenizer_checkpoint')!r}"
                        f"{'' if found else ', not there with hash ' + str(index.get('tokenizer'))})")
        if found is not None:
            tok = tok or found
            break
    packaged = _packaged(ckpt) if tok is None else None
    if packaged is not None:
        fps, tok = packaged.fps, packaged.tokenizer
    if tokenizer is not None:
        if tok is not None:
            _same_codes(tok, Path(tokenizer), world)
        tok = Path(tokenizer)
    if tok is None:
        where = "; ".join(searched) or f"no token-shard index recorded by the run or beside {run}"
        raise ModelError(f"{world}: cannot find the tokenizer its token shards were made with (hash {want}); "
                         f"searched: {where}. Pass --tokenizer DIR")
    try:
        tok_ckpt = Path(read_checkpoint_config(tok)["path"])
    except CheckpointError as e:
        raise ModelError(str(e)) from None
    rollouts = run.parent / "eval" / "rollouts.npz"
    contexts = packaged.contexts if packaged is not None else rollouts if rollouts.is_file() else None
    return Model(world=ckpt, tokenizer=tok_ckpt, fps=fps, origin=origin or f"checkpoint {world}", contexts=contexts,
                 info=packaged.info if packaged is not None else {})


def _packaged(ckpt: Path) -> Model | None:
    """The model of a shipped model's folder whose world/ is the checkpoint `ckpt` (module doc), else None."""
    folder = ckpt.parent
    if ckpt.name != "world" or not (folder / "MODEL.json").is_file() or not (folder / "tokenizer").is_dir():
        return None
    return shipped(folder)


def _same_codes(found: Path, given: Path, world: Path) -> None:
    """A tokenizer given for a run must make the codes of the one its data was made with (itself, or a
    decoder refined from it by `ochre train-tokenizer --decoder-of`): else the world model reads codes it
    never learned, and the dream is noise."""
    from ochre.models.checkpoint import codes_mismatch

    try:
        why = codes_mismatch(found, given)
    except CheckpointError as e:
        raise ModelError(str(e)) from None
    if why:
        raise ModelError(f"--tokenizer {why}; {world} was trained on the former's codes")


def newest_demo() -> Path | None:
    """The output folder of the newest `ochre demo` on this machine that holds a world model."""
    pointer = cache_dir() / "last_demo.json"
    candidates = []
    if pointer.is_file():
        try:
            candidates.append(Path(json.loads(pointer.read_text())["out"]))
        except (OSError, json.JSONDecodeError, KeyError):
            pass
    candidates.append(Path("demo-out").resolve())                 # the demo's default --out
    for out in candidates:
        if (out / "world" / "checkpoints").is_dir() and (out / "tokenizer").is_dir():
            return out
    return None


def shipped(folder: Path = SHIPPED) -> Model:
    """The tiny model shipped inside the package (see ochre.runtime.ship), or the one in a copy of its folder."""
    info_path = folder / "MODEL.json"
    if not info_path.is_file():
        raise ModelError("this install has no shipped model; pass --checkpoint DIR or run `ochre demo`")
    try:
        info = json.loads(info_path.read_text())
        fps = float(info["fps"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{info_path}: unreadable or without `fps` ({e})") from None
    made = [info.get("made_by", "ochre demo")]
    if info.get("world_made_by"):
        made.append(f"its world model trained further, {info.get('world_step', '?')} steps in all")
    if info.get("tokenizer_made_by"):
        made.append("its decoder refined")
    return Model(world=folder / "world", tokenizer=folder / "tokenizer", fps=fps,
                 origin=f"the shipped model ({'; '.join(made)})",
                 contexts=folder / "contexts.npy", info=info)


def resolve(checkpoint=None, tokenizer=None, log=None) -> Model:
    """Explicit run -> newest demo -> shipped (docs/runtime.md#which-model). `log` (default: stderr)
    hears why a newest demo was passed over."""
    if checkpoint is not None:
        return from_run(checkpoint, tokenizer)
    demo = newest_demo()
    if demo is not None:
        try:
            return from_run(demo / "world", tokenizer, origin=f"the newest `ochre demo` model ({demo})")
        except ModelError as e:
            (log or (lambda m: print(m, file=sys.stderr)))(f"ochre: not playing the newest demo: {e}")
    return shipped()


def load(model: Model, device="cpu", impl: str = "auto"):
    """(tokenizer, dynamics, SamplingConfig) on `device`, eval mode."""
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    tokenizer = load_tokenizer(model.tokenizer, device, impl=impl)
    dynamics, sampling, _ = load_dynamics(model.world, device, impl=impl)
    return tokenizer, dynamics, sampling
