"""ONNX export of the three graphs (ochre.export.graph) at a static batch and dtype.

Legend: B players, h w token grid, H W pixels, L ConvGRU layers, C_l their widths, K codebook size.

An export folder holds encode.onnx, step.onnx, decode.onnx (weights in `*.onnx.data` beside each),
contexts.npy and manifest.json (export/manifest.py: written last, verified on load), which says
everything a runtime needs without torch:
    {"format", "batch", "dtype", "grid", "frame", "codebook_size", "state_shapes" [[B, C_l, h, w]],
     "sampling" {temperature, top_k, guidance}, "fps", "inputs"/"outputs" per graph,
     "sources" {tokenizer, world: checkpoint path, hash, step}, "parity" (export.parity's report),
     "files" {name: sha256}}
Input and output names are fixed (runtimes bind by name):
    encode  frames uint8 (B, H, W, 3)                              -> tokens int64 (B, h, w)
    step    tokens, actions fp32 (B, 4), noise fp32 (B, h, w), state_0..state_{L-1} fp32
                                                                   -> next_tokens, logits (B, h, w, K),
                                                                      next_state_0..next_state_{L-1}
    decode  tokens int64 (B, h, w), view fp32 (B, 3)               -> frames uint8 (B, H, W, 3)
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import torch

from ochre.export import manifest as mf
from ochre.export.graph import DecodeGraph, EncodeGraph, StepGraph
from ochre.models.precision import PRECISIONS

FORMAT = "ochre-onnx/4"      # 2: step logits channels-last (B, h, w, K); 3: file hashes; 4: decode takes the view
GRAPHS = ("encode", "step", "decode")
DTYPES = {k: PRECISIONS[k] for k in ("fp32", "fp16")}


def step_names(layers: int) -> tuple[list[str], list[str]]:
    """Input and output names of the step graph for `layers` ConvGRU layers."""
    state = [f"state_{i}" for i in range(layers)]
    return (["tokens", "actions", "noise", *state], ["next_tokens", "logits", *[f"next_{s}" for s in state]])


def build_graphs(tokenizer, model, sampling, dtype: str = "fp32") -> dict[str, torch.nn.Module]:
    """The three export modules at `dtype` ("fp32" | "fp16"), eval mode, on the CPU."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    dt = DTYPES[dtype]
    tokenizer, model = tokenizer.cpu(), model.cpu()
    return {"encode": EncodeGraph(tokenizer, dt).eval(), "step": StepGraph(model, sampling, dt).eval(),
            "decode": DecodeGraph(tokenizer, dt).eval()}


def example_inputs(graphs: dict[str, torch.nn.Module], batch: int) -> dict[str, tuple[torch.Tensor, ...]]:
    step = graphs["step"].example_inputs(batch)
    gen = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, generator=gen)   # (B, H, W, 3)
    return {"encode": (frames,), "step": step, "decode": (step[0], step[-1])}


def _io_names(graphs) -> dict[str, tuple[list[str], list[str]]]:
    return {"encode": (["frames"], ["tokens"]), "step": step_names(len(graphs["step"].state_shapes)),
            "decode": (["tokens", "view"], ["frames"])}


def _export_one(module: torch.nn.Module, inputs: tuple, path: Path, names: tuple[list[str], list[str]]) -> None:
    # The dynamo exporter narrates every pass on stdout; a failure raises with its own report.
    with contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(module, inputs, dynamo=True, input_names=names[0], output_names=names[1],
                                    optimize=True, verbose=False)
    program.save(str(path), external_data=True)


def export_onnx(graphs: dict[str, torch.nn.Module], out_dir, *, batch: int = 1, dtype: str = "fp32",
                fps: float = 8.0, sources: dict | None = None) -> dict:
    """Write the three graphs into out_dir and return their manifest. The caller writes
    manifest.json only once the parity check has passed: a runtime never loads an unchecked export."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's op library)
    except ImportError as e:
        raise RuntimeError("ONNX export needs onnxscript: pip install 'ochre[export]'") from e
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)       # no stale manifest beside new graphs
    inputs, names = example_inputs(graphs, batch), _io_names(graphs)
    for name in GRAPHS:
        for stale in (out / f"{name}.onnx", out / f"{name}.onnx.data"):
            stale.unlink(missing_ok=True)
        _export_one(graphs[name], inputs[name], out / f"{name}.onnx", names[name])
    step = graphs["step"]
    manifest = {
        "format": FORMAT, "batch": batch, "dtype": dtype, "grid": step.model.config.grid, "frame": [64, 64, 3],
        "codebook_size": step.model.config.codebook_size,
        "state_shapes": [[batch, *s] for s in step.state_shapes],
        "sampling": dataclasses.asdict(step.sampling), "fps": fps,
        "inputs": {g: names[g][0] for g in GRAPHS}, "outputs": {g: names[g][1] for g in GRAPHS},
        "sources": sources or {},
    }
    return manifest


def files(manifest: dict) -> list[str]:
    """The files of an export folder a runtime reads, whose hashes the manifest records."""
    return [f for g in GRAPHS for f in (f"{g}.onnx", f"{g}.onnx.data")] + ["contexts.npy"]


def write_manifest(out_dir, manifest: dict) -> None:
    mf.write(out_dir, manifest, files(manifest))


def read_manifest(onnx_dir) -> dict:
    """manifest.json of an export folder, every file verified; raises FileNotFoundError /
    manifest.ExportError naming the fix."""
    m = mf.read(onnx_dir, FORMAT, f"ochre export CKPT --out {onnx_dir}")
    missing = [f"{g}.onnx" for g in GRAPHS if f"{g}.onnx" not in m["files"]]
    if missing:
        raise mf.ExportError(f"{onnx_dir}: the manifest lists no {', '.join(missing)}; re-export")
    return m
