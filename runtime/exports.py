"""Exports made on demand for a model: play and bench with an exported backend (onnxruntime,
tensorrt, native) and no export folder named.

They live in the cache (ochre.models.lookup.cache_dir()/exports/), one folder per model and
settings, keyed by the tokenizer's and world model's checkpoint hashes, the batch, the dtype and the
code of the graphs (graph_code: an export made by another version of ochre is made again);
AOTInductor packages also by torch version and what they are compiled for: the CPU's vector ISA, or
the GPU's architecture.
Each passes the same parity check as `ochre export`, whose manifest is written last, so a folder
without one (an interrupted export) is made again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from ochre.runtime.stepper import EXPORTED

# The modules whose code the exported graphs are: the models, their sampling and live step, the
# precision wrappers, the kernels' torch reference, and the export wrappers.
GRAPH_SOURCES = ("ochre.models.dynamics", "ochre.models.sampling", "ochre.models.step", "ochre.models.tokenizer",
                 "ochre.models.precision", "ochre.kernels.reference", "ochre.export.graph", "ochre.export.onnx",
                 "ochre.export.aoti")


@functools.cache
def graph_code() -> str:
    """8 hex digits of the source of GRAPH_SOURCES: an export cached by other code (an older ochre)
    is made again, not run with the graphs it had then."""
    digest = hashlib.sha256()
    for name in GRAPH_SOURCES:
        digest.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return digest.hexdigest()[:8]


def export_dir(model, batch: int, dtype: str = "fp32") -> Path:
    from ochre.models.checkpoint import checkpoint_hash
    from ochre.models.lookup import cache_dir

    key = f"{checkpoint_hash(model.tokenizer)}-{checkpoint_hash(model.world)}-b{batch}-{dtype}-code{graph_code()}"
    return cache_dir() / "exports" / key


def aoti_dir(model, batch: int, dtype: str = "fp32", device: str = "cpu") -> Path:
    import torch

    from ochre.export.aoti import compiled_for
    from ochre.models.checkpoint import checkpoint_hash
    from ochre.models.lookup import cache_dir

    target = compiled_for(device)
    machine = target.get("cuda_arch") or target["cpu_capability"]          # sm_90 | AVX512 | ...
    key = (f"aoti-{checkpoint_hash(model.tokenizer)}-{checkpoint_hash(model.world)}-b{batch}-{dtype}-"
           f"torch{torch.__version__}-{device}-{machine}-code{graph_code()}").replace("+", "_")
    return cache_dir() / "exports" / key


def ensure_export(model, batch: int = 1, dtype: str = "fp32", out: Path | None = None, log=print) -> Path:
    """An ONNX export folder for `model` at `batch`, made (and parity-checked) if absent. The parity
    rollout is 64 steps up to batch 8 and 512 player-steps beyond (the fp64 reference runs on the
    CPU: 64 steps at batch 64 take minutes there)."""
    from ochre.export.cli import export_model
    from ochre.export.onnx import read_manifest

    out = Path(out) if out is not None else export_dir(model, batch, dtype)
    try:
        m = read_manifest(out)
        if m["batch"] == batch and m["dtype"] == dtype:
            return out
    except (FileNotFoundError, ValueError):
        pass
    export_model(model, out, dtype=dtype, batch=batch, steps=max(8, min(64, 512 // batch)), log=log)
    return out


def ensure_aoti(model, batch: int = 1, out: Path | None = None, check_steps: int = 16, dtype: str = "fp32",
                device: str = "cpu", log=print) -> Path:
    """An AOTInductor package folder for `model` at `batch` and `dtype` on `device`, compiled (and
    checked against eager torch there over `check_steps` steps) if absent or made by another torch
    or for another machine. Three compiles: about 35 s on a 2-core CPU."""
    from ochre.export.aoti import export_aoti, read_manifest
    from ochre.models.checkpoint import checkpoint_hash

    out = Path(out) if out is not None else aoti_dir(model, batch, dtype, device)
    try:
        m = read_manifest(out)
        if m["batch"] == batch and m.get("dtype", "fp32") == dtype and m.get("device", "cpu") == device \
                and m["sources"]["world"]["hash"] == checkpoint_hash(model.world):
            return out
    except (FileNotFoundError, ValueError, KeyError):
        pass
    log(f"compiling {model.origin} with AOTInductor -> {out} (batch {batch}, {dtype}, {device})")
    export_aoti(model, out, batch=batch, check_steps=check_steps, dtype=dtype, device=device, log=log)
    return out


def ensure_for(backend: str, model, batch: int, dtype: str = "fp32", device: str = "cpu", log=print) -> Path | None:
    """The export folder `backend` runs for `model` at `batch` and `dtype` on `device` (None for torch
    and compiled)."""
    if EXPORTED.get(backend) == "aoti":
        return ensure_aoti(model, batch, dtype=dtype, device=device, log=log)
    if backend == "tensorrt":
        from ochre.export.tensorrt import build_engines, engine_info

        onnx_dir = ensure_export(model, batch=batch, dtype=dtype, log=log)
        try:
            engine_info(onnx_dir)
        except FileNotFoundError:
            build_engines(onnx_dir, log=log)
        return onnx_dir
    if backend == "onnxruntime":
        return ensure_export(model, batch=batch, dtype=dtype, log=log)
    return None
