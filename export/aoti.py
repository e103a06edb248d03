"""AOTInductor export (docs/native.md): the encoder, the step (sampling inside) and the decoder as
`.pt2` packages with static shapes at batch B, for `ochre-native` (C++, no Python) and the
runtime's `native` backend; checked against eager torch right after the compile.

Legend: B players, h w token grid (16), H W pixels (64), L ConvGRU layers, C_l their widths.

The package folder (`ochre export CKPT --format aoti --out DIR`):
  encode.pt2     frames uint8 (B, H, W, 3) -> tokens int64 (B, h, w)
  step.pt2       tokens int64 (B, h, w), actions fp32 (B, 4), noise fp32 (B, h, w) in [0, 1),
                 state_0 .. state_L fp32 (Dynamics.state_shapes) -> next tokens, next state_0 .. state_L
                 (no logits: nothing in a live loop reads them; the parity check compares the tokens,
                 near-ties judged on eager torch's logits, and the state)
  decode.pt2     tokens int64 (B, h, w), view fp32 (B, 3) (the step's last state) -> frames uint8 (B, H, W, 3)
  shapes.txt     the static shapes, one "name n1 n2 ..." line each (`batch`, `grid`, `frame`,
                 one `state` line per layer): what the C++ loop allocates; `#` lines are comments
  context.npy    uint8 (B, H, W, 3): real context frames of the model, the default start of a dream
  manifest.json  format, batch, dtype, device, grid, state shapes, sampling, noise rule, fps, sources
                 (checkpoint paths and hashes), parity report, torch version, what the code was
                 compiled for (the CPU's vector ISA, or the GPU's name and sm_XY architecture) and
                 the sha256 of every file (export/manifest.py); written last, once the parity check
                 has passed, and verified on load, so a runtime never loads an unchecked,
                 half-written or altered folder, or one compiled for another machine (read_manifest)
AOTInductor compiles the graphs to C++ (device "cpu") or to Triton kernels and a C++ launcher
(device "cuda", cubins for this GPU's architecture inside the package) and links them into the
package; the weights are constants inside it. The step graph uses the pure-torch FiLM-GRU (a Python
custom op cannot be packaged); Inductor fuses the gate arithmetic itself, into Triton kernels on CUDA.
A CUDA package's inputs and outputs live on the GPU; the parity check runs eager torch on the same
GPU with TF32 off (ochre.models.precision.strict_fp32), as the runtime does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ochre.export import manifest as mf
from ochre.export.graph import DecodeGraph, EncodeGraph, StepGraph
from ochre.export.parity import ParityError
from ochre.export.ties import TIE_TOL, code_margin, count_flips, sampling_margin
from ochre.models.precision import PRECISIONS, strict_fp32
from ochre.models.step import NOISE

FORMAT = "ochre-aoti/5"      # 2: logits channels-last; 3: no logits output; 4: file hashes; 5: decode takes the view
PACKAGES = ("encode", "step", "decode")
# Parity bounds against eager torch at the package's precision over the check rollout. fp32,
# measured on a 2-core x86 CPU for the tiny preset: state within 2e-6; 100x headroom for other
# CPUs' vector units. A token may differ only at a near-tie: a draw within `tie`
# of another outcome (export/ties.py).
STATE_TOL = 2e-4
# bf16 (convolutions and linear layers; oneDNN accumulates in fp32 and rounds each output to bf16's
# 8-bit mantissa): two correct bf16 compilations differ by bf16 roundings, not fp32 ones. Measured
# on the shipped model, batch 1, 32 steps, Inductor vs eager torch: state within 0.059, 440 of
# 8,192 tokens differ, every one a draw within 0.003 of another outcome (438 within 0.001: over
# 2,048 codes a spread distribution's CDF steps are that small). The bounds give 3-8x headroom.
# Frames have no fixed bound: like ONNX's (export/parity.py) and every kernel test's, the package's
# uint8 frames must lie within max(2 * e_torch, 1) levels of the fp64 decode of the same tokens and
# view, e_torch being eager torch's own distance to it at the package's precision, measured on the
# spot (`frames_bound`). A fixed bound measured on one decoder does not carry to another: a
# decoder's gain sets how far bf16 roundings move its pixels (on the same 64 dreamed grids, eager
# bf16 torch lies within 2 levels of fp64 with the 2026-12-04 decoder and within 14 with the
# dream-taught one, whose Inductor package lies within 12). Whether bf16 dreams as well as fp32 is
# `ochre eval --dtype bf16`'s question (the §6 metrics), not this check's.
TOLERANCE = {"fp32": {"tie": TIE_TOL, "state": STATE_TOL},
             "bf16": {"tie": 0.01, "state": 0.5}}


def frames_bound(e_torch: int) -> int:
    """Levels of 255 a package's frames may lie from the fp64 decode: twice eager torch's own
    distance at the package's precision, and at least 1 (x * 255 rounds at .5: one level is the
    rounding itself)."""
    return max(2 * e_torch, 1)


DTYPES = {k: PRECISIONS[k] for k in ("fp32", "bf16")}


def cpu_capability() -> str:
    """The vector ISA Inductor compiles for here ("AVX512", "AVX2", ...): a CPU package runs only
    on CPUs that have it (its generated code and prepacked weights are specific to it)."""
    return torch.backends.cpu.get_cpu_capability()


def cuda_arch(index: int = 0) -> str:
    """The architecture a CUDA package's cubins are compiled for ("sm_90" on an H100): they run on
    that architecture only."""
    major, minor = torch.cuda.get_device_capability(index)
    return f"sm_{major}{minor}"


def compiled_for(device: str) -> dict:
    """What a package compiled here for `device` is tied to (recorded in the manifest)."""
    if device == "cuda":
        return {"device": "cuda", "cuda_arch": cuda_arch(), "gpu": torch.cuda.get_device_name(0)}
    if device != "cpu":
        raise ValueError(f"AOTInductor packages are compiled for cpu or cuda, not {device!r}")
    return {"device": "cpu", "cpu_capability": cpu_capability()}


def _check_machine(folder, m: dict) -> None:
    """Refuse a package compiled for another kind of machine than this one, naming the fix."""
    if m.get("device", "cpu") == "cuda":
        if not torch.cuda.is_available():
            raise mf.ExportError(f"{folder}: compiled for CUDA ({m.get('gpu')}, {m.get('cuda_arch')}), and torch sees "
                                 "no CUDA GPU here; re-export with --device cpu")
        if m.get("cuda_arch") != cuda_arch():
            raise mf.ExportError(f"{folder}: compiled for {m.get('cuda_arch')} GPUs, this one is {cuda_arch()}; "
                                 "re-export here")
    elif m.get("cpu_capability", cpu_capability()) != cpu_capability():
        raise mf.ExportError(f"{folder}: compiled for {m['cpu_capability']} CPUs, this one is {cpu_capability()}; "
                             "re-export here")


FILES = (*(f"{n}.pt2" for n in PACKAGES), "shapes.txt", "context.npy")


def read_manifest(folder) -> dict:
    """manifest.json of a package folder, every file verified and checked against this install;
    raises FileNotFoundError / manifest.ExportError naming the folder and the fix."""
    m = mf.read(folder, FORMAT, f"ochre export CKPT --format aoti --out {folder}")
    missing = [f for f in FILES if f not in m["files"]]
    if missing:
        raise mf.ExportError(f"{folder}: the manifest lists no {', '.join(missing)}; re-export")
    if m.get("torch") != torch.__version__:
        raise mf.ExportError(f"{folder}: compiled by torch {m.get('torch')}, this is torch {torch.__version__} "
                             "(AOTInductor packages are tied to the torch that made them); re-export")
    if m.get("dtype", "fp32") not in DTYPES:
        raise mf.ExportError(f"{folder}: dtype {m.get('dtype')!r} is not one of {sorted(DTYPES)}; re-export")
    _check_machine(folder, m)
    return m


def compile_package(graph: torch.nn.Module, inputs: tuple, path: Path) -> float:
    """torch.export + AOTInductor with freezing: the weights become constants, folded and (CPU)
    prepacked for oneDNN's convolutions. On a 2-core x86 CPU that took the tiny step from 17 ms to
    3.9 ms (eager: 13.6 ms; best of 60 at batch 1), since unfrozen the convolutions re-layout their
    weights on every call. Prepacked weights tie the package to the compiling CPU's ISA, as the
    generated vector code already does."""
    t0 = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(graph, inputs, strict=False)
        torch._inductor.aoti_compile_and_package(ep, package_path=str(path), inductor_configs={"freezing": True})
    return time.perf_counter() - t0


def _write_shapes(out: Path, step: StepGraph, batch: int, device: str) -> None:
    g = step.model.config.grid
    lines = [f"# {FORMAT}: static shapes of the packages in this folder, and the device their inputs live on",
             f"batch {batch}", f"grid {g}", "frame 64 64 3",
             *(f"state {' '.join(map(str, s))}" for s in step.state_shapes)]
    if device != "cpu":                                      # no line: cpu (folders made before there was one)
        lines.append(f"device {device}")
    (out / "shapes.txt").write_text("\n".join(lines) + "\n")


def load_packages(out) -> dict:
    """{name: runner} for the three packages of a folder (Python side, torch's loader)."""
    return {name: torch._inductor.aoti_load_package(str(Path(out) / f"{name}.pt2")) for name in PACKAGES}


def _new_report(steps: int, batch: int, dtype: str = "fp32") -> dict:
    return {"steps": steps, "batch": batch, "dtype": dtype,
            "step": {"tokens": 0, "differ": 0, "near_ties": 0, "bad": 0},
            "max_abs_err": {"state": 0.0, "frames": 0, "frames_torch": 0}, "tolerance": dict(TOLERANCE[dtype])}


def _frame_errors(decode: DecodeGraph, exact: DecodeGraph, tokens, view, got_frames, report: dict) -> None:
    """Tally into `report` how far the backend's frames and eager torch's (at the backend's precision,
    `decode`) lie from the fp64 decode (`exact`) of the same tokens and view."""
    ref = exact(tokens, view).int()
    err = report["max_abs_err"]
    err["frames"] = max(err["frames"], int((got_frames.int() - ref).abs().max()))
    err["frames_torch"] = max(err["frames_torch"], int((decode(tokens, view).int() - ref).abs().max()))


def _eager_step(step: StepGraph, decode: DecodeGraph, exact: DecodeGraph, tokens, actions, noise, state, got_tokens,
                got_frames, report: dict):
    """One eager step (`step` with logits) from the backend's own input tokens; tallies token flips
    (near-ties or not) and the frame errors of the backend's decode into `report`. Returns the next state."""
    e_next, e_logits, *state = step(tokens, actions, noise, *state)
    margin = sampling_margin(e_logits.movedim(-1, 1), noise, step.sampling)
    for k, v in count_flips(e_next, got_tokens, margin, report["tolerance"]["tie"]).items():
        report["step"][k] += v
    # the view follows from the actions alone: eager's is the backend's
    _frame_errors(decode, exact, got_tokens, state[-1], got_frames, report)
    return state


def _assert_within(report: dict) -> dict:
    err, tol = report["max_abs_err"], report["tolerance"]
    tol["frames"] = frames_bound(err["frames_torch"])
    if report["step"]["bad"] or report.get("encode", {}).get("bad", 0):
        raise ParityError(f"AOTInductor packages: tokens differ from eager torch beyond near-ties: {report}")
    if err["state"] > tol["state"] or err["frames"] > tol["frames"]:
        raise ParityError(f"AOTInductor packages differ from eager torch beyond the bounds (frames: levels of 255 "
                          f"from the fp64 decode, bound twice eager torch's own): {report}")
    return report


@torch.no_grad()
def check_parity(out, step: StepGraph, encode: EncodeGraph, decode: DecodeGraph, exact: DecodeGraph,
                 steps: int = 16, seed: int = 0, dtype: str = "fp32", device: str = "cpu") -> dict:
    """Packages vs eager torch on a `steps`-step rollout from the folder's context frames, random actions.

    Tokens are teacher-forced on the package's own: each step the eager graph starts from the
    tokens the package produced, so one allowed near-tie flip does not cascade into a different
    dream. `step` is the eager graph with logits (StepGraph(logits=True)), for the near-ties;
    `exact` the fp64 decoder (exact_decode), the frames' reference. Raises ParityError on a flip
    that is not a near-tie, or state/frames beyond the bounds; returns the measured report.
    Packages and eager graphs run on `device`; the actions and noise are drawn on the CPU, as the
    runtime draws them.
    """
    pkg = load_packages(out)
    frames = torch.from_numpy(np.load(Path(out) / "context.npy")).to(device)
    B = frames.shape[0]
    report = _new_report(steps, B, dtype)
    tokens, eager_tokens = pkg["encode"](frames), encode(frames)
    tok = encode.tokenizer
    z = tok.encoder(tok.normalize(frames.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).flatten(0, 2)   # (N, D)
    report["encode"] = count_flips(eager_tokens.flatten(), tokens.flatten(),
                                   code_margin(z, tok.codebook, eager_tokens.flatten(), tokens.flatten()))
    gen = torch.Generator().manual_seed(seed)
    state = [torch.zeros(B, *s, device=device) for s in step.state_shapes]
    eager_state = [s.clone() for s in state]
    err = report["max_abs_err"]
    for _ in range(steps):
        actions = (torch.rand(B, 4, generator=gen) * 2 - 1).to(device)
        noise = torch.rand(B, *tokens.shape[1:], generator=gen).to(device)
        nxt, *state = pkg["step"](tokens, actions, noise, *state)
        eager_state = _eager_step(step, decode, exact, tokens, actions, noise, eager_state, nxt,
                                  pkg["decode"](nxt, state[-1]), report)
        err["state"] = max(err["state"], max(float((s - e).abs().max()) for s, e in zip(state, eager_state)))
        tokens = nxt
    return _assert_within(report)


def exact_decode(tokenizer, device="cpu") -> DecodeGraph:
    """The fp64 decoder: the reference every package's frames are measured against."""
    return DecodeGraph(tokenizer, torch.float64).to(device)


@torch.no_grad()
def replay_eager(step: StepGraph, decode: DecodeGraph, exact: DecodeGraph, tokens, frames, actions, noise,
                 dtype: str = "fp32") -> dict:
    """A recorded run (e.g. ochre-native's) against eager torch, teacher-forced on its tokens:
    tokens int64 (S+1, B, h, w), frames uint8 (S+1, B, H, W, 3), actions (S, B, 4), noise (S, B, h, w).
    Raises ParityError on a non-near-tie flip or frames beyond the bound (frames_bound); returns
    the report."""
    tokens, frames = torch.as_tensor(tokens), torch.as_tensor(frames)
    report = _new_report(len(actions), tokens.shape[1], dtype)
    state = [torch.zeros(tokens.shape[1], *s) for s in step.state_shapes]
    _frame_errors(decode, exact, tokens[0], state[-1], frames[0], report)
    for t in range(len(actions)):
        state = _eager_step(step, decode, exact, tokens[t], torch.as_tensor(actions[t]), torch.as_tensor(noise[t]),
                            state, tokens[t + 1], frames[t + 1], report)
    return _assert_within(report)


def export_aoti(model, out, *, batch: int = 1, check_steps: int = 16, seed: int = 0,
                guidance: float | None = None, dtype: str = "fp32", device: str = "cpu", log=print) -> dict:
    """Compile the three packages of a resolved model (ochre.models.lookup.Model) for `batch` players
    on `device` ("cpu": C++; "cuda": Triton kernels for this GPU) into `out` and check them there;
    returns the manifest. guidance overrides the checkpoint's (it is baked into the step graph);
    dtype is the precision of the step's and the decoder's convolutions and linear layers (DTYPES;
    the encoder, run once per reset, stays fp32)."""
    from dataclasses import asdict, replace

    from ochre.models.checkpoint import checkpoint_hash, read_checkpoint_config
    from ochre.models.lookup import load

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if dtype not in DTYPES:
        raise ValueError(f"AOTInductor packages are {' or '.join(DTYPES)}, not {dtype!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda, but torch sees no CUDA GPU (AOTInductor compiles for the GPU it runs on)")
    machine = compiled_for(device)                            # raises on a device packages cannot target
    strict_fp32(device)
    tok, dyn, sampling = load(model, device, impl="torch")
    if guidance is not None:
        sampling = replace(sampling, guidance=guidance)
    if tok.config.codebook_size != dyn.config.codebook_size:
        raise ValueError(f"tokenizer has K={tok.config.codebook_size} codes but the world model "
                         f"K={dyn.config.codebook_size}: pass the tokenizer it was trained on")
    sources = {}
    for name, path in (("tokenizer", model.tokenizer), ("world", model.world)):
        meta = read_checkpoint_config(path)
        sources[name] = {"checkpoint": str(meta["path"]), "hash": checkpoint_hash(path), "step": meta["step"]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)       # no stale manifest beside new packages
    dt = DTYPES[dtype]
    step, encode, decode = StepGraph(dyn, sampling, dt), EncodeGraph(tok), DecodeGraph(tok, dt)
    live = StepGraph(dyn, sampling, dt, logits=False)           # the package's; `step` is the reference
    contexts = model.context_frames()
    frames = np.ascontiguousarray(contexts[np.arange(batch) % len(contexts)])      # (B, H, W, 3)
    np.save(out / "context.npy", frames)
    example = step.example_inputs(batch, device)
    seconds = {}
    for name, graph, inputs in (("encode", encode, (torch.from_numpy(frames).to(device),)), ("step", live, example),
                                ("decode", decode, (example[0], example[-1]))):
        log(f"compiling {name}.pt2 (batch {batch}, {device}) ...")
        seconds[name] = round(compile_package(graph, inputs, out / f"{name}.pt2"), 1)
    _write_shapes(out, step, batch, device)
    parity = check_parity(out, step, encode, decode, exact_decode(tok, device), check_steps, seed, dtype,
                          device) if check_steps else None
    manifest = {"format": FORMAT, "batch": batch, "dtype": dtype, "grid": dyn.config.grid,
                "codebook_size": dyn.config.codebook_size,
                "state_shapes": [list(s) for s in step.state_shapes], "sampling": asdict(sampling), "noise": NOISE,
                "fps": model.fps, "sources": sources, "packages": {n: f"{n}.pt2" for n in PACKAGES},
                "compile_s": seconds, "parity": parity, "torch": torch.__version__, **machine}
    mf.write(out, manifest, FILES)
    return read_manifest(out)
