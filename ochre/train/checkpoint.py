"""Writing checkpoints (docs/data.md#checkpoints-and-run-folders): atomic, pickle-free saves of a
model with its optimizer and RNG state, and the exact-resume load. Reading (finding, verifying,
loading weights) is ochre.models.checkpoint's, which this module builds on.

A checkpoint is written whole into `.step_XXXXXXXX.tmp/`, each file fsynced, then the folder
is renamed into place and the parent fsynced: a reader sees a complete checkpoint or none.
Stale `.tmp` folders (a killed run) are ignored by readers and deleted by the next save.
Corruption after the fact (a truncated or altered file) fails the load with a CheckpointError
naming the file: resuming silently from an older step would hide it, so the user decides
(delete that folder to resume from the previous checkpoint). Optimizer state is flattened into
safetensors ("state.<param index>.<name>") plus JSON; nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ochre.io import _fsync_dir, remove_temporaries, write_json_atomic
from ochre.models.checkpoint import FORMAT, CheckpointError, checkpoints, load_verified, load_weights, sha256, unwrap

# -- optimizer state <-> (tensors, json) --------------------------------------------------------

def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = []
    for i, group in enumerate(sd["param_groups"]):
        g = {}
        for name, value in group.items():
            if isinstance(value, torch.Tensor):  # e.g. a tensor lr
                tensors[f"group.{i}.{name}"] = value.detach().cpu().contiguous()
            else:
                g[name] = value
        groups.append(g)
    return tensors, {"class": type(optimizer).__name__, "param_groups": groups, "scalar_state": scalars}


def _unflatten_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict):
    if meta["class"] != type(optimizer).__name__:
        raise CheckpointError(f"checkpoint holds {meta['class']} state, but the optimizer is "
                              f"{type(optimizer).__name__}")
    state: dict[int, dict] = {}
    for idx, values in meta["scalar_state"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = [dict(g) for g in meta["param_groups"]]
    for key, value in tensors.items():
        kind, idx, name = key.split(".", 2)
        if kind == "state":
            state.setdefault(int(idx), {})[name] = value
        else:
            groups[int(idx)][name] = value
    # JSON turns tuples (AdamW's betas) into lists: restore the types the live optimizer uses.
    for live, g in zip(optimizer.param_groups, groups):
        for name, value in g.items():
            if isinstance(live.get(name), tuple) and isinstance(value, list):
                g[name] = tuple(value)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# -- RNG state <-> JSON ------------------------------------------------------------------------

def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _from_b64(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=np.uint8).copy())


def capture_rng_state(**generators: np.random.Generator | torch.Generator) -> dict:
    """RNG state, JSON-safe: Python's `random`, torch CPU, every CUDA device, and the named
    generators passed in (numpy `Generator`s or `torch.Generator`s, e.g. the data sampler's).
    The legacy global `np.random` is not captured: the project draws from Generators."""
    version, internal, gauss = random.getstate()
    named = {}
    for name, gen in generators.items():
        if isinstance(gen, torch.Generator):
            named[name] = {"torch": _b64(gen.get_state())}
        else:
            named[name] = {"numpy": gen.bit_generator.state}  # ints of any size: JSON keeps them
    return {
        "python": [version, list(internal), gauss],
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "generators": named,
    }


def restore_rng_state(state: dict, **generators: np.random.Generator | torch.Generator) -> None:
    """Inverse of `capture_rng_state`: pass the same generator names (CUDA states are restored
    for as many devices as both machines have)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(_from_b64(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(_from_b64(s), device=i)
    for name, gen in generators.items():
        if name not in state.get("generators", {}):
            raise CheckpointError(f"no RNG state saved for generator {name!r}; saved: "
                                  f"{sorted(state.get('generators', {}))}")
        saved = state["generators"][name]
        if isinstance(gen, torch.Generator):
            gen.set_state(_from_b64(saved["torch"]))
        else:
            gen.bit_generator.state = saved["numpy"]


# -- save ----------------------------------------------------------------------------------------

def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _remove(path: Path) -> None:
    # Rename first, so a half-deleted folder never looks like a checkpoint.
    doomed = path.with_name(f".{path.name}.del.tmp")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def save_checkpoint(run_dir, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    extra: dict | None = None, keep: int = 3, companions: dict | None = None) -> Path:
    """Write RUN/checkpoints/step_{step:08d}/ atomically, then keep only the newest `keep`.

    `model` needs a dataclass `.config` (DDP / torch.compile wrappers are unwrapped). `extra` must
    be JSON-serialisable (see `capture_rng_state`). `companions` {name: (module, optimizer)}: modules
    that train beside the model but are not part of it (a discriminator), saved with their optimizers
    in companions.safetensors so a resume is exact; loading the model never reads them.
    Call it on one rank only. Returns the folder.
    """
    if step < 0 or keep < 1:
        raise ValueError(f"need step >= 0 and keep >= 1, got step={step}, keep={keep}")
    try:
        json.dumps(extra or {})
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_checkpoint: `extra` must be JSON-serialisable ({e}); encode tensors and "
                        "RNG states first (capture_rng_state)") from e
    model = unwrap(model)
    if not dataclasses.is_dataclass(getattr(model, "config", None)):
        raise TypeError(f"{type(model).__name__} has no dataclass .config to record in config.json")
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    remove_temporaries(root)           # left by a killed save; only one writer per run
    final = root / f"step_{step:08d}"
    tmp = root / f".{final.name}.tmp"
    tmp.mkdir()

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp / "model.safetensors")
    files = ["model.safetensors"]
    meta = {
        "format": FORMAT,
        "kind": getattr(model, "kind", type(model).__name__),
        "config": dataclasses.asdict(model.config),
        "step": int(step),
        "optim": None,
        "extra": extra or {},
    }
    if optimizer is not None:
        tensors, meta["optim"] = _flatten_optimizer(optimizer)
        save_file(tensors, tmp / "optim.safetensors")
        files.append("optim.safetensors")
    if companions:
        tensors, meta["companions"] = {}, {}
        for name, (module, opt) in companions.items():
            tensors.update({f"{name}.model.{k}": v.detach().cpu().contiguous()
                            for k, v in unwrap(module).state_dict().items()})
            flat, meta["companions"][name] = _flatten_optimizer(opt)
            tensors.update({f"{name}.optim.{k}": v for k, v in flat.items()})
        save_file(tensors, tmp / "companions.safetensors")
        files.append("companions.safetensors")
    for name in files:
        _fsync(tmp / name)
    meta["files"] = {name: sha256(tmp / name) for name in files}
    write_json_atomic(tmp / "config.json", meta)  # fsyncs the file

    if final.exists():  # the same step saved again (e.g. after a resume): replace it
        _remove(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in checkpoints(root)[:-keep]:
        _remove(old)
    return final


# -- resume -------------------------------------------------------------------------------------

def load_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    companions: dict | None = None) -> dict:
    """Load weights, buffers (and optimizer state) into `model` in place; returns config.json.

    `path` is a checkpoint folder or a run folder (its newest checkpoint). Every file is checked
    against the sha256 in config.json first. Parameters keep their device; strict on keys/shapes.
    companions: {name: (module, optimizer)} saved beside the model (`save_checkpoint`), loaded too.
    """
    meta = load_weights(path, model)
    if optimizer is not None:
        if meta["optim"] is None:
            raise CheckpointError(f"{meta['path']}: saved without optimizer state; cannot resume the optimizer")
        _unflatten_optimizer(optimizer, load_verified(Path(meta["path"]), "optim.safetensors", meta), meta["optim"])
    if companions:
        saved = meta.get("companions") or {}
        missing = sorted(set(companions) - set(saved))
        if missing:
            raise CheckpointError(f"{meta['path']}: saved without {', '.join(missing)}; cannot resume them")
        tensors = load_verified(Path(meta["path"]), "companions.safetensors", meta)

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        for name, (module, opt) in companions.items():
            try:
                unwrap(module).load_state_dict(part(f"{name}.model."), strict=True)
            except RuntimeError as e:
                raise CheckpointError(f"{meta['path']}: the saved {name} does not fit this one: {e}") from e
            _unflatten_optimizer(opt, part(f"{name}.optim."), saved[name])
    return meta
