"""AOTInductor export (DESIGN §8): the encoder, the step (sampling inside) and the decoder as
`.pt2` packages with static shapes at batch B, for `ochre-native` (C++, no Python) and the
runtime's `native` backend; checked against eager torch right after the compile.

Legend: B players, h w token grid (16), H W pixels (64), L ConvGRU layers, C_l their widths.

The package folder (`ochre export CKPT --format aoti --out DIR`):
  encode.pt2     frames uint8 (B, H, W, 3) -> tokens int64 (B, h, w)
  step.pt2       tokens int64 (B, h, w), actions fp32 (B, 4), noise fp32 (B, h, w) in [0, 1),
                 state_0 .. state_L fp32 (Dynamics.state_shapes) -> next tokens, next state_0 .. state_L
                 (no logits: nothing in a live loop reads them; the parity check compares the tokens,
                 near-ties judged on eager torch's logits, and the state)
  decode.pt2     tokens int64 (B, h, w) -> frames uint8 (B, H, W, 3)
  shapes.txt     the static shapes, one "name n1 n2 ..." line each (`batch`, `grid`, `frame`,
                 one `state` line per layer): what the C++ loop allocates; `#` lines are comments
  context.npy    uint8 (B, H, W, 3): a start view of the synthetic world, the default context
  manifest.json  format, batch, dtype, grid, state shapes, sampling, noise rule, fps, sources (checkpoint
                 paths and hashes), parity report, torch version and CPU capability; written
                 last, once the parity check has passed, so a runtime never loads an unchecked
                 or half-written folder (read_manifest)
AOTInductor compiles the graphs to C++ (CPU) or Triton (CUDA) and links them into the package;
the weights are constants inside it. The step graph uses the pure-torch FiLM-GRU (a Python
custom op cannot be packaged); Inductor fuses the gate arithmetic itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ochre.export.graph import PRECISIONS, DecodeGraph, EncodeGraph, StepGraph
from ochre.export.ties import TIE_TOL, code_margin, count_flips, sampling_margin

FORMAT = "ochre-aoti/3"      # 2: step logits channels-last (B, h, w, K); 3: no logits output
PACKAGES = ("encode", "step", "decode")
# The noise rule both the Python backend and ochre-native follow: a CPU generator seeded with
# `seed` at reset, one torch.rand(B, h, w) draw per step (libtorch's mt19937 in both, so the
# same seed gives bit-identical noise).
NOISE = "torch.rand((B, h, w), generator=torch.Generator().manual_seed(seed)), one draw per step"
# Parity bounds against eager torch at the package's precision over the check rollout. fp32,
# measured on a 2-core x86 CPU for the tiny preset: state within 2e-6; 100x headroom for other
# CPUs' vector units. A token may differ only at a near-tie: a draw within `tie`
# of another outcome (export/ties.py).
STATE_TOL = 2e-4
# bf16 (convolutions and linear layers; oneDNN accumulates in fp32 and rounds each output to bf16's
# 8-bit mantissa): two correct bf16 compilations differ by bf16 roundings, not fp32 ones. Measured
# on the shipped model, batch 1, 32 steps, Inductor vs eager torch: state within 0.059, frames
# within 1 level, 440 of 8,192 tokens differ, every one a draw within 0.003 of another outcome (438
# within 0.001: over 2,048 codes a spread distribution's CDF steps are that small). The bounds give
# 3-8x headroom. Whether bf16 dreams as well as fp32 is `ochre eval --dtype bf16`'s question (the
# §6 metrics), not this check's.
TOLERANCE = {"fp32": {"tie": TIE_TOL, "state": STATE_TOL, "frames": 1},
             "bf16": {"tie": 0.01, "state": 0.5, "frames": 2}}
DTYPES = {k: PRECISIONS[k] for k in ("fp32", "bf16")}


def cpu_capability() -> str:
    """The vector ISA Inductor compiles for here ("AVX512", "AVX2", ...): a CPU package runs only
    on CPUs that have it (its generated code and prepacked weights are specific to it)."""
    return torch.backends.cpu.get_cpu_capability()


def read_manifest(folder) -> dict:
    """manifest.json of a package folder, checked against this install; raises FileNotFoundError /
    ValueError naming the folder and the fix."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no manifest.json; make the packages with "
                                f"`ochre export CKPT --format aoti --out {folder}`")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON ({e}); re-export") from None
    if m.get("format") != FORMAT:
        raise ValueError(f"{path}: format {m.get('format')!r}, expected {FORMAT!r}; re-export")
    missing = [f"{n}.pt2" for n in PACKAGES if not (Path(folder) / f"{n}.pt2").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}; re-export")
    if m.get("torch") != torch.__version__:
        raise ValueError(f"{folder}: compiled by torch {m.get('torch')}, this is torch {torch.__version__} "
                         "(AOTInductor packages are tied to the torch that made them); re-export")
    if m.get("dtype", "fp32") not in DTYPES:
        raise ValueError(f"{path}: dtype {m.get('dtype')!r} is not one of {sorted(DTYPES)}; re-export")
    if m.get("cpu_capability", cpu_capability()) != cpu_capability():
        raise ValueError(f"{folder}: compiled for {m['cpu_capability']} CPUs, this one is {cpu_capability()}; "
                         "re-export here")
    return m


def find_tokenizer(ckpt, tokenizer=None) -> Path:
    """The tokenizer of a world-model run: `tokenizer` if given, else the `tokenizer` run beside
    the world run (the layout `ochre demo` writes), checked against the run's token hash."""
    from ochre.train.checkpoint import checkpoint_hash, read_checkpoint_config

    if tokenizer is not None:
        return Path(tokenizer)
    meta = read_checkpoint_config(ckpt)
    want = meta["extra"].get("identity", {}).get("tokens")
    for parent in Path(meta["path"]).resolve().parents:
        candidate = parent / "tokenizer"
        if (candidate / "checkpoints").is_dir() and (want is None or checkpoint_hash(candidate) == want):
            return candidate
    raise FileNotFoundError(f"no tokenizer found beside {ckpt}: pass --tokenizer DIR (the tokenizer run "
                            "whose tokens the world model was trained on)")


def context_frames(batch: int, seed: int = 0) -> np.ndarray:
    """uint8 (B, H, W, 3): the first view of synthetic episodes seed/0 .. seed/B-1."""
    from ochre.data.synth import render_episode

    return np.stack([render_episode(seed, i, 1).frames[0] for i in range(batch)])


def _compile(graph: torch.nn.Module, inputs: tuple, path: Path) -> float:
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


def _write_shapes(out: Path, step: StepGraph, batch: int) -> None:
    g = step.model.config.grid
    lines = [f"# {FORMAT}: static shapes of the packages in this folder", f"batch {batch}", f"grid {g}",
             "frame 64 64 3", *(f"state {' '.join(map(str, s))}" for s in step.state_shapes)]
    (out / "shapes.txt").write_text("\n".join(lines) + "\n")


def load_packages(out) -> dict:
    """{name: runner} for the three packages of a folder (Python side, torch's loader)."""
    return {name: torch._inductor.aoti_load_package(str(Path(out) / f"{name}.pt2")) for name in PACKAGES}


def _new_report(steps: int, batch: int, dtype: str = "fp32") -> dict:
    return {"steps": steps, "batch": batch, "dtype": dtype,
            "step": {"tokens": 0, "differ": 0, "near_ties": 0, "bad": 0},
            "max_abs_err": {"state": 0.0, "frames": 0}, "tolerance": dict(TOLERANCE[dtype])}


def _eager_step(step: StepGraph, decode: DecodeGraph, tokens, actions, noise, state, got_tokens, got_frames,
                report: dict):
    """One eager step (`step` with logits) from the backend's own input tokens; tallies token flips
    (near-ties or not) and the frame error of the backend's decode into `report`. Returns the next state."""
    e_next, e_logits, *state = step(tokens, actions, noise, *state)
    margin = sampling_margin(e_logits.movedim(-1, 1), noise, step.sampling)
    for k, v in count_flips(e_next, got_tokens, margin, report["tolerance"]["tie"]).items():
        report["step"][k] += v
    err = report["max_abs_err"]
    err["frames"] = max(err["frames"], int((got_frames.int() - decode(got_tokens).int()).abs().max()))
    return state


def _assert_within(report: dict) -> dict:
    from ochre.export.cli import ParityError

    err, tol = report["max_abs_err"], report["tolerance"]
    if report["step"]["bad"] or report.get("encode", {}).get("bad", 0):
        raise ParityError(f"AOTInductor packages: tokens differ from eager torch beyond near-ties: {report}")
    if err["state"] > tol["state"] or err["frames"] > tol["frames"]:
        raise ParityError(f"AOTInductor packages differ from eager torch beyond the bounds: {report}")
    return report


@torch.no_grad()
def check_parity(out, step: StepGraph, encode: EncodeGraph, decode: DecodeGraph, steps: int = 16,
                 seed: int = 0, dtype: str = "fp32") -> dict:
    """Packages vs eager torch on a `steps`-step rollout from the folder's context frames, random actions.

    Tokens are teacher-forced on the package's own: each step the eager graph starts from the
    tokens the package produced, so one allowed near-tie flip does not cascade into a different
    dream. `step` is the eager graph with logits (StepGraph(logits=True)), for the near-ties.
    Raises ParityError on a flip that is not a near-tie, or state/frames
    beyond the bounds; returns the measured report.
    """
    pkg = load_packages(out)
    frames = torch.from_numpy(np.load(Path(out) / "context.npy"))
    B = frames.shape[0]
    report = _new_report(steps, B, dtype)
    tokens, eager_tokens = pkg["encode"](frames), encode(frames)
    tok = encode.tokenizer
    z = tok.encoder(tok.normalize(frames.permute(0, 3, 1, 2))).permute(0, 2, 3, 1).flatten(0, 2)   # (N, D)
    report["encode"] = count_flips(eager_tokens.flatten(), tokens.flatten(),
                                   code_margin(z, tok.codebook, eager_tokens.flatten(), tokens.flatten()))
    gen = torch.Generator().manual_seed(seed)
    state = [torch.zeros(B, *s) for s in step.state_shapes]
    eager_state = [s.clone() for s in state]
    err = report["max_abs_err"]
    for _ in range(steps):
        actions = torch.rand(B, 4, generator=gen) * 2 - 1
        noise = torch.rand(B, *tokens.shape[1:], generator=gen)
        nxt, *state = pkg["step"](tokens, actions, noise, *state)
        eager_state = _eager_step(step, decode, tokens, actions, noise, eager_state, nxt, pkg["decode"](nxt), report)
        err["state"] = max(err["state"], max(float((s - e).abs().max()) for s, e in zip(state, eager_state)))
        tokens = nxt
    return _assert_within(report)


@torch.no_grad()
def replay_eager(step: StepGraph, decode: DecodeGraph, tokens, frames, actions, noise, dtype: str = "fp32") -> dict:
    """A recorded run (e.g. ochre-native's) against eager torch, teacher-forced on its tokens:
    tokens int64 (S+1, B, h, w), frames uint8 (S+1, B, H, W, 3), actions (S, B, 4), noise (S, B, h, w).
    Raises ParityError on a non-near-tie flip or a frame off by more than 1; returns the report."""
    tokens, frames = torch.as_tensor(tokens), torch.as_tensor(frames)
    report = _new_report(len(actions), tokens.shape[1], dtype)
    report["max_abs_err"]["frames"] = int((frames[0].int() - decode(tokens[0]).int()).abs().max())
    state = [torch.zeros(tokens.shape[1], *s) for s in step.state_shapes]
    for t in range(len(actions)):
        state = _eager_step(step, decode, tokens[t], torch.as_tensor(actions[t]), torch.as_tensor(noise[t]),
                            state, tokens[t + 1], frames[t + 1], report)
    return _assert_within(report)


def export_aoti(ckpt, out, *, tokenizer=None, batch: int = 1, check_steps: int = 16, seed: int = 0,
                guidance: float | None = None, fps: float | None = None, dtype: str = "fp32", log=print) -> dict:
    """Compile the three packages for `batch` players into `out` and check them; returns the manifest.
    guidance overrides the checkpoint's (it is baked into the step graph); fps is the model's frame
    rate (DESIGN §3.2), recorded for players of the folder; dtype the precision of the step's and
    the decoder's convolutions and linear layers (DTYPES; the encoder, run once per reset, stays fp32)."""
    from dataclasses import asdict, replace

    from ochre.io import write_json_atomic
    from ochre.train.checkpoint import checkpoint_hash, load_dynamics, load_tokenizer, read_checkpoint_config

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if dtype not in DTYPES:
        raise ValueError(f"AOTInductor packages are {' or '.join(DTYPES)}, not {dtype!r}")
    model, sampling, _ = load_dynamics(ckpt, "cpu", impl="torch")
    if guidance is not None:
        sampling = replace(sampling, guidance=guidance)
    tok_path = find_tokenizer(ckpt, tokenizer)
    tok = load_tokenizer(tok_path, "cpu", impl="torch")
    if tok.config.codebook_size != model.config.codebook_size:
        raise ValueError(f"tokenizer has K={tok.config.codebook_size} codes but the world model "
                         f"K={model.config.codebook_size}: pass the tokenizer it was trained on")
    sources = {}
    for name, path in (("tokenizer", tok_path), ("world", ckpt)):
        meta = read_checkpoint_config(path)
        sources[name] = {"checkpoint": str(meta["path"]), "hash": checkpoint_hash(path), "step": meta["step"]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)       # no stale manifest beside new packages
    dt = DTYPES[dtype]
    step, encode, decode = StepGraph(model, sampling, dt), EncodeGraph(tok), DecodeGraph(tok, dt)
    live = StepGraph(model, sampling, dt, logits=False)         # the package's; `step` is the reference
    frames = context_frames(batch, seed)
    np.save(out / "context.npy", frames)
    example = step.example_inputs(batch)
    seconds = {}
    for name, graph, inputs in (("encode", encode, (torch.from_numpy(frames),)), ("step", live, example),
                                ("decode", decode, (example[0],))):
        log(f"compiling {name}.pt2 (batch {batch}) ...")
        seconds[name] = round(_compile(graph, inputs, out / f"{name}.pt2"), 1)
    _write_shapes(out, step, batch)
    parity = check_parity(out, step, encode, decode, check_steps, seed, dtype) if check_steps else None
    manifest = {"format": FORMAT, "batch": batch, "dtype": dtype, "grid": model.config.grid,
                "codebook_size": model.config.codebook_size,
                "state_shapes": [list(s) for s in step.state_shapes], "sampling": asdict(sampling), "noise": NOISE,
                "fps": fps, "sources": sources, "packages": {n: f"{n}.pt2" for n in PACKAGES},
                "compile_s": seconds, "parity": parity, "torch": torch.__version__,
                "cpu_capability": cpu_capability()}
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def run(args) -> int:
    import sys

    from ochre.export.cli import ParityError
    from ochre.runtime.model import ModelError, from_run
    from ochre.train.checkpoint import CheckpointError

    try:
        try:          # a run whose token shards name its tokenizer and frame rate (the demo's layout)
            model = from_run(args.checkpoint, args.tokenizer)
            world, tokenizer, fps = model.world, model.tokenizer, model.fps
        except ModelError:                       # else the tokenizer run beside it (find_tokenizer)
            world, tokenizer, fps = args.checkpoint, args.tokenizer, None
        m = export_aoti(world, args.out, tokenizer=tokenizer, batch=args.batch, check_steps=args.check_steps,
                        seed=args.seed, guidance=args.guidance, fps=fps, dtype=args.dtype,
                        log=lambda msg: print(msg, file=sys.stderr))
    except (CheckpointError, FileNotFoundError, ValueError, ParityError) as e:
        print(f"ochre export: {e}", file=sys.stderr)
        return 2
    p = m["parity"]
    if p is not None:
        print(f"parity vs eager over {p['steps']} steps: {p['step']['differ']} of {p['step']['tokens']} tokens "
              f"differ, all near-ties; state within {p['max_abs_err']['state']:.1e}, frames within "
              f"{p['max_abs_err']['frames']}")
    print(f"wrote {args.out}: {', '.join(m['packages'].values())} (batch {m['batch']}, {m['dtype']}; "
          f"compile s {m['compile_s']})")
    return 0
