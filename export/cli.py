"""`ochre export CKPT --out DIR`: ONNX (fp32 | fp16) with its parity check, and TensorRT engines.

Writes DIR/{encode,step,decode}.onnx, DIR/contexts.npy (context frames, so the folder plays on its
own) and, once the parity check has passed, DIR/manifest.json holding the parity report. A failed
check writes DIR/parity_failed.json, no manifest, and exits non-zero. --format tensorrt also builds
DIR/tensorrt/*.engine from the ONNX (needs the `tensorrt` extra and a GPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


class ParityError(RuntimeError):
    """An export whose outputs disagree with eager torch beyond the stated tolerance."""


def export_model(model, out, *, dtype: str = "fp32", batch: int = 1, guidance: float | None = None,
                 steps: int | None = None, log=print) -> dict:
    """Export a resolved `ochre.runtime.model.Model` into `out`; check parity; return the manifest."""
    import dataclasses

    import torch

    from ochre.export import onnx as ox
    from ochre.export import parity
    from ochre.io import write_json_atomic
    from ochre.runtime.model import load
    from ochre.train.checkpoint import checkpoint_hash, read_checkpoint_config

    out = Path(out)
    tokenizer, dynamics, sampling = load(model, "cpu", impl="torch")
    if guidance is not None:
        sampling = dataclasses.replace(sampling, guidance=guidance)
    torch.manual_seed(0)
    graphs = ox.build_graphs(tokenizer, dynamics, sampling, dtype)
    fp32 = graphs if dtype == "fp32" else ox.build_graphs(tokenizer, dynamics, sampling, "fp32")
    sources = {name: {"checkpoint": str(path), "hash": checkpoint_hash(path),
                      "step": read_checkpoint_config(path)["step"]}
               for name, path in (("tokenizer", model.tokenizer), ("world", model.world))}
    log(f"exporting {model.origin} -> {out} (onnx, {dtype}, batch {batch})")
    manifest = ox.export_onnx(graphs, out, batch=batch, dtype=dtype, fps=model.fps, sources=sources)
    np.save(out / "contexts.npy", model.context_frames())
    log(f"parity check: onnxruntime vs eager torch vs fp64 ({steps or parity.ROLLOUT_STEPS}-step rollout)")
    report = parity.check_export(graphs, fp32, out, dtype, batch, steps=steps or parity.ROLLOUT_STEPS)
    if not report["passed"]:
        write_json_atomic(out / "parity_failed.json", report)
        raise ParityError(f"{out}: the export does not match eager torch:\n  " + "\n  ".join(report["failures"])
                          + f"\n(full report: {out / 'parity_failed.json'})")
    (out / "parity_failed.json").unlink(missing_ok=True)
    manifest["parity"] = report
    ox.write_manifest(out, manifest)
    log(summary(report))
    return manifest


def summary(report: dict) -> str:
    s, e, d = report["step"], report["encode"], report["decode"]
    return (f"parity passed: logits max error {s['ort_error']['logits']:.2e} "
            f"(tolerance {s['tolerance']['logits']:.2e}, eager torch {s['eager_error']['logits']:.2e}), "
            f"state {s['ort_error']['state']:.2e}; "
            f"sampled tokens {s['onnxruntime_token_mismatches']} of {s['positions']} differ, all at near-ties; "
            f"encode agreement {e['agreement']:.4%}; decode max {d['ort_error']:g} levels")


def run(args) -> int:
    from ochre.export import aoti, onnx
    from ochre.runtime.model import ModelError, from_run
    from ochre.train.checkpoint import CheckpointError

    allowed = tuple(aoti.DTYPES if args.format == "aoti" else onnx.DTYPES)
    if args.dtype not in allowed:
        print(f"ochre export: --format {args.format} takes --dtype {' or '.join(allowed)}, not {args.dtype}",
              file=sys.stderr)
        return 2
    if args.format == "aoti":                    # the native deploy path (export/aoti.py)
        from ochre.export.aoti import run as run_aoti
        return run_aoti(args)

    try:
        model = from_run(args.checkpoint, args.tokenizer)
        manifest = export_model(model, args.out, dtype=args.dtype, batch=args.batch, guidance=args.guidance,
                                log=lambda m: print(m, file=sys.stderr))
        if args.format == "tensorrt":
            from ochre.export.tensorrt import build_engines

            engines = build_engines(args.out, log=lambda m: print(m, file=sys.stderr))
            manifest["tensorrt"] = {name: str(p.name) for name, p in engines.items()}
    except (ModelError, CheckpointError, FileNotFoundError, ParityError, RuntimeError) as e:
        print(f"ochre export: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("batch", "dtype", "fps", "sampling")}))
    print(f"wrote {args.out}")
    return 0
