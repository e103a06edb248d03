"""Reading checkpoints (docs/data.md#checkpoints-and-run-folders): find, verify and load the weights
of a tokenizer or dynamics model. Writing them (and optimizer and RNG state) is training's
(ochre.train.checkpoint); everything that only plays, exports or evaluates a model reads through here.

Layout: RUN/checkpoints/step_XXXXXXXX/ holds model.safetensors, optim.safetensors (optional) and
config.json {"format", "kind", "config", "step", "optim", "extra", "files"}, "files" holding the
sha256 of each safetensors file. Every file is checked against it before use: a truncated or altered
file fails with a CheckpointError naming it, never a silent load. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

FORMAT = "ochre-checkpoint/1"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupted or of the wrong kind."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP (.module) and torch.compile (._orig_mod) wrappers, which prefix the keys."""
    while True:
        inner = getattr(model, "module", getattr(model, "_orig_mod", None))
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint folders under RUN/checkpoints, oldest first (`.tmp` leftovers ignored)."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "config.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir) -> Path | None:
    """Newest complete checkpoint folder of a run, or None."""
    found = checkpoints(Path(run_dir) / "checkpoints")
    return found[-1] if found else None


def resolve(path) -> Path:
    """A checkpoint folder, or a run folder meaning its newest checkpoint."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path}: neither a checkpoint folder (no config.json) nor a run folder "
                              "with checkpoints/step_*/; train one first or pass the right path")
    return found


def read_checkpoint_config(path) -> dict:
    """config.json of a checkpoint (or of a run's newest checkpoint), with "path" set to its folder."""
    path = resolve(path)
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'config.json'}: unreadable ({e}); delete {path} to fall back "
                              "to the previous checkpoint") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    meta["path"] = str(path)
    return meta


def checkpoint_hash(path) -> str:
    """Short sha256 (16 hex digits) of a checkpoint's model.safetensors: names the weights."""
    return sha256(resolve(path) / "model.safetensors")[:16]


def motion_prior_of(path) -> dict:
    """The motion prior of a world checkpoint (or a run's newest): settings of its config that its hash,
    which names the weights only, does not cover (DynamicsConfig.motion_prior)."""
    from ochre.models.dynamics import DynamicsConfig

    return DynamicsConfig(**read_checkpoint_config(path)["config"]).motion_prior()


def load_verified(path: Path, name: str, meta: dict) -> dict[str, torch.Tensor]:
    """One safetensors file of a checkpoint, after checking it against config.json's sha256."""
    file = path / name
    if not file.is_file() or sha256(file) != meta["files"].get(name):
        raise CheckpointError(f"{file}: missing, truncated or altered (sha256 differs from config.json); "
                              f"delete {path} to resume from the previous checkpoint")
    return load_file(file)


def load_weights(path, model: torch.nn.Module, new: tuple[str, ...] = ()) -> dict:
    """Weights and buffers of a checkpoint (or a run's newest) into `model` in place, strict on keys
    and shapes, except that the model's parameters under the prefixes `new` (a part the model grows,
    e.g. "pointer.") may be absent from the checkpoint and keep their initial values; returns config.json."""
    meta = read_checkpoint_config(path)
    path = Path(meta["path"])
    target = unwrap(model)
    state = load_verified(path, "model.safetensors", meta)
    grown = {k: v for k, v in target.state_dict().items() if k.startswith(new) and k not in state} if new else {}
    try:
        target.load_state_dict({**state, **grown}, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit {type(target).__name__} "
                              f"({meta['kind']} {meta['config']}): {e}") from e
    return meta


def _build(meta: dict, cls, config_cls, impl: str):
    if meta["kind"] != cls.kind:
        raise CheckpointError(f"{meta['path']}: holds a {meta['kind']!r} model, not a {cls.kind} model")
    try:
        return cls(config_cls(**{**meta["config"], "impl": impl}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta['path']}: its config does not fit this version's {config_cls.__name__} "
                              f"({e})") from e


def load_tokenizer(path_or_run_dir, device: str | torch.device = "cpu", impl: str = "auto"):
    """The tokenizer of a checkpoint (or a run's newest), loaded, eval mode. `impl` picks the kernels
    for this machine; the one the run trained with does not matter."""
    from ochre.models.tokenizer import Tokenizer, TokenizerConfig

    meta = read_checkpoint_config(path_or_run_dir)
    model = _build(meta, Tokenizer, TokenizerConfig, impl)
    load_weights(meta["path"], model)
    return model.to(device).eval()


def codes_mismatch(reference, candidate) -> str | None:
    """Why the tokenizer checkpoint `candidate` cannot stand in for `reference`, or None when it can:
    it must make the same codes (`Tokenizer.codes_digest`), as `reference` itself or a decoder refined
    from it by `ochre train-tokenizer --decoder-of` does."""
    want, got = load_tokenizer(reference).codes_digest(), load_tokenizer(candidate).codes_digest()
    if want == got:
        return None
    return (f"{candidate} makes other codes than {reference} (its encoder or codebook differ: codes {got} vs "
            f"{want}); pass that tokenizer or a decoder refined from it (`ochre train-tokenizer --decoder-of`)")


def load_dynamics(path_or_run_dir, device: str | torch.device = "cpu", impl: str = "auto"):
    """The dynamics model of a checkpoint (or a run's newest), loaded, eval mode -> (model, the
    SamplingConfig the run ships, config.json). `impl` picks the step kernel for this machine."""
    from ochre.models.dynamics import Dynamics, DynamicsConfig
    from ochre.models.sampling import SamplingConfig

    meta = read_checkpoint_config(path_or_run_dir)
    model = _build(meta, Dynamics, DynamicsConfig, impl)
    try:
        sampling = SamplingConfig(**meta["extra"].get("sampling", {}))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{meta['path']}: its decoding settings do not fit this version's SamplingConfig "
                              f"({e})") from e
    load_weights(meta["path"], model)
    return model.to(device).eval(), sampling, meta
