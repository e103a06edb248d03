"""`ochre export CKPT --out DIR`: ONNX (fp32 | fp16) with its parity check, TensorRT engines, or
AOTInductor packages (`--format aoti`, export/aoti.py) for the CPU or, with --device cuda, the GPU.

ONNX writes DIR/{encode,step,decode}.onnx, DIR/contexts.npy (context frames, so the folder plays on
its own) and, once the parity check has passed, DIR/manifest.json holding the parity report and the
hash of every file (export/manifest.py). A failed check writes DIR/parity_failed.json, no manifest,
and exits non-zero. --format tensorrt also builds DIR/tensorrt/*.engine from the ONNX (needs the
`tensorrt` extra and a GPU).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ochre.export.parity import ParityError


def _graphs(model, dtype: str, guidance: float | None = None):
    """(graphs at dtype, graphs in fp32, sampling) of a resolved model, on the CPU."""
    import dataclasses

    import torch

    from ochre.export import onnx as ox
    from ochre.models.lookup import load

    tokenizer, dynamics, sampling = load(model, "cpu", impl="torch")
    if guidance is not None:
        sampling = dataclasses.replace(sampling, guidance=guidance)
    torch.manual_seed(0)
    graphs = ox.build_graphs(tokenizer, dynamics, sampling, dtype)
    fp32 = graphs if dtype == "fp32" else ox.build_graphs(tokenizer, dynamics, sampling, "fp32")
    return graphs, fp32


def export_model(model, out, *, dtype: str = "fp32", batch: int = 1, guidance: float | None = None,
                 steps: int | None = None, log=print) -> dict:
    """Export a resolved model (ochre.models.lookup.Model) to ONNX in `out`; check parity; return the manifest."""
    from ochre.export import onnx as ox
    from ochre.export import parity
    from ochre.io import write_json_atomic
    from ochre.models.checkpoint import checkpoint_hash, read_checkpoint_config

    out = Path(out)
    graphs, fp32 = _graphs(model, dtype, guidance)
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
    return ox.read_manifest(out)


def device_parity(model, folder, device: str, steps: int = 8) -> dict:
    """The export folder's parity check again, ONNX Runtime on `device` (the GPU a benchmark times it
    on: its kernels are not the CPU's); raises ParityError on failure, returns the report."""
    from ochre.export import onnx as ox
    from ochre.export import parity

    m = ox.read_manifest(folder)
    graphs, fp32 = _graphs(model, m["dtype"], m["sampling"]["guidance"])
    report = parity.check_export(graphs, fp32, folder, m["dtype"], m["batch"], steps=steps, device=device)
    if not report["passed"]:
        raise ParityError(f"{folder}: onnxruntime on {device} does not match eager torch: "
                          + "; ".join(report["failures"]))
    return report


def summary(report: dict) -> str:
    s, e, d = report["step"], report["encode"], report["decode"]
    return (f"parity passed: logits max error {s['ort_error']['logits']:.2e} "
            f"(tolerance {s['tolerance']['logits']:.2e}, eager torch {s['eager_error']['logits']:.2e}), "
            f"state {s['ort_error']['state']:.2e}; "
            f"sampled tokens {s['onnxruntime_token_mismatches']} of {s['positions']} differ, all at near-ties; "
            f"encode agreement {e['agreement']:.4%}; decode max {d['ort_error']:g} levels")


def _aoti_summary(m: dict) -> str:
    p = m["parity"]
    check = "" if p is None else (
        f"parity vs eager over {p['steps']} steps: {p['step']['differ']} of {p['step']['tokens']} tokens differ, "
        f"all near-ties; state within {p['max_abs_err']['state']:.1e}; frames within {p['max_abs_err']['frames']} "
        f"levels of the fp64 decode (bound {p['tolerance']['frames']}: twice eager torch's "
        f"{p['max_abs_err']['frames_torch']})\n")
    return check + (f"wrote {', '.join(m['packages'].values())} (batch {m['batch']}, {m['dtype']}, "
                    f"{m.get('device', 'cpu')}; compile s {m['compile_s']})")


def run(args) -> int:
    from ochre.export import aoti, onnx, ort
    from ochre.models.checkpoint import CheckpointError
    from ochre.models.lookup import ModelError, from_run

    allowed = tuple(aoti.DTYPES if args.format == "aoti" else onnx.DTYPES)
    if args.dtype not in allowed:
        print(f"ochre export: --format {args.format} takes --dtype {' or '.join(allowed)}, not {args.dtype}",
              file=sys.stderr)
        return 2
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    try:
        model = from_run(args.checkpoint, args.tokenizer)
        if args.format == "aoti":                    # the native deploy path (export/aoti.py)
            m = aoti.export_aoti(model, args.out, batch=args.batch, check_steps=args.check_steps, seed=args.seed,
                                 guidance=args.guidance, dtype=args.dtype, device=args.device, log=log)
            print(_aoti_summary(m) + f" -> {args.out}")
            return 0
        manifest = export_model(model, args.out, dtype=args.dtype, batch=args.batch, guidance=args.guidance, log=log)
        if args.device != "cpu":                     # an ONNX file runs anywhere; check it where it will run
            report = device_parity(model, args.out, args.device)
            log(f"parity on {args.device}: " + summary(report).removeprefix("parity passed: "))
        if args.format == "tensorrt":
            from ochre.export.tensorrt import build_engines

            engines = build_engines(args.out, log=log)
            manifest["tensorrt"] = {name: str(p.name) for name, p in engines.items()}
    except (ModelError, CheckpointError, FileNotFoundError, ValueError, ParityError, RuntimeError, ImportError,
            *ort.errors()) as e:          # onnxruntime's own errors are not RuntimeError (export/ort.py)
        print(f"ochre export: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: manifest[k] for k in ("batch", "dtype", "fps", "sampling")}))
    print(f"wrote {args.out}")
    return 0
