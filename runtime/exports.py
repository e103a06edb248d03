"""ONNX exports made on demand for a model (play and bench with --backend onnxruntime and no --onnx).

They live in the cache (ochre.runtime.model.cache_dir()/exports/), one folder per (tokenizer hash,
world hash, batch, dtype), and pass the same parity check as `ochre export`.
"""

from __future__ import annotations

from pathlib import Path


def export_dir(model, batch: int, dtype: str = "fp32") -> Path:
    from ochre.runtime.model import cache_dir
    from ochre.train.checkpoint import checkpoint_hash

    key = f"{checkpoint_hash(model.tokenizer)}-{checkpoint_hash(model.world)}-b{batch}-{dtype}"
    return cache_dir() / "exports" / key


def ensure_export(model, batch: int = 1, dtype: str = "fp32", out: Path | None = None, log=print) -> Path:
    """An export folder for `model` at `batch`, made (and parity-checked) if absent. The parity
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
