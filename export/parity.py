"""Parity of an ONNX export against eager torch, run after every export; a failure fails the export.

Legend: B players, K codebook size, k top-k, h w token grid, S rollout steps.

Reference and tolerance (an implementation may be at most ~2× as far from an fp64 reference as
torch's own computation at the same precision: the rule every kernel test follows too):
  - the reference is the step graph in fp64 (the sampler itself runs in fp32 on every side);
  - torch eager at the export's precision (fp32, or fp16 convolutions for --dtype fp16) runs the
    same inputs, and its error against the reference, e_torch, is measured on the spot;
  - ONNX Runtime passes when its error is <= 2·e_torch + floor, for the logits and the state
    (floor: 1e-5 for fp32, i.e. ~8 ulp at |x| ~ 10; 1e-2 for fp16, ~10 fp16 ulp at |x| ~ 1).
Sampled tokens must equal the reference's except at near-ties: positions where a logit change
within the tolerance could change the sample (two of the top k+1 logits closer than 2·tol, or the
inverse-CDF threshold within 2·tol/temperature of a CDF step; see `near_ties`). They are counted
and reported. The rollout runs S = 64 steps closed-loop on each side, all fed the same actions and
noise; where a side samples a near-tie differently, its tokens are reset to the reference's (its
state runs on), so all S steps stay comparable.
Encode: tokens equal to eager torch at the same precision on >= 99.9 % (fp32) / 99 % (fp16) of the
positions that are not nearest-code near ties in fp64 (check_encode). Decode: uint8 frames within
max(2·e_torch, 1) levels of the fp64 decode (x·255 rounds at .5: one level is the rounding itself).
ONNX Runtime runs on the device asked (`device`): an export is checked on the CPU when it is made,
and again on the GPU before the GPU's rows are measured (export/cli.py device_parity); the torch
sides and the fp64 reference stay on the CPU, the same yardstick for both.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ochre.export.graph import DecodeGraph, StepGraph
from ochre.export.ties import decision_gaps
from ochre.models.dynamics import VIEW
from ochre.models.sampling import SamplingConfig

ROLLOUT_STEPS = 64


class ParityError(RuntimeError):
    """An export whose outputs disagree with eager torch beyond the stated tolerance."""


FLOOR = {"fp32": 1e-5, "fp16": 1e-2}
ENCODE_AGREEMENT = {"fp32": 0.999, "fp16": 0.99}


def near_ties(logits: torch.Tensor, u: torch.Tensor, cfg: SamplingConfig, tol: float) -> torch.Tensor:
    """Positions whose sample a logit change of at most `tol` could flip: logits (B, K, h, w)
    (the reference's), u (B, h, w) -> bool (B, h, w). Mirrors ochre.models.sampling.sample_tokens.

    Ordering: the sample depends on which codes are in the top k and in which order, so any two
    of the top k+1 closer than 2·tol may swap. Threshold: each CDF entry moves by at most
    2·tol/temperature (a softmax probability p moves by at most p·(e^{2·tol/T} − 1)), so a threshold
    u·cdf_last closer than that (+ 1e-6 for the sampler's own fp32 rounding) to a step may cross it.
    """
    order, step = decision_gaps(logits, u, cfg)
    if cfg.temperature == 0:                        # argmax: no threshold to cross (step is inf)
        return order < 2 * tol
    return (order < 2 * tol) | (step < 2 * tol / cfg.temperature + 1e-6)


class _Ort:
    def __init__(self, path: Path, device: str = "cpu"):
        from ochre.export import ort

        self.session = ort.session(path, device)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        feeds = {name: a.detach().cpu().numpy() for name, a in zip(self.inputs, args)}
        return [torch.from_numpy(x) for x in self.session.run(None, feeds)]


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


class _Side:
    """One implementation under test: its state, its largest errors, its token mismatches."""

    def __init__(self, run, state: list[torch.Tensor]):
        self.run, self.state = run, state
        self.err = {"logits": 0.0, "state": 0.0}
        self.mismatch_logits: list[torch.Tensor] = []      # (N, K) reference logits where tokens differ
        self.mismatch_u: list[torch.Tensor] = []           # (N,)

    def step(self, tokens, actions, noise, ref_out) -> None:
        out = self.run(tokens, actions, noise, *self.state)
        self.err["logits"] = max(self.err["logits"], _err(out[1], ref_out[1]))
        self.err["state"] = max(self.err["state"], max(_err(a, b) for a, b in zip(out[2:], ref_out[2:])))
        bad = out[0] != ref_out[0]                                                # (B, h, w)
        if bad.any():
            self.mismatch_logits.append(ref_out[1][bad])                              # (N, K)
            self.mismatch_u.append(noise[bad])
        self.state = list(out[2:])

    def mismatches(self, cfg: SamplingConfig, tol: float) -> tuple[int, int]:
        """(token mismatches, of which not at a near-tie)."""
        if not self.mismatch_logits:
            return 0, 0
        logits = torch.cat(self.mismatch_logits)[:, :, None, None]                   # (N, K, 1, 1)
        u = torch.cat(self.mismatch_u)[:, None, None]                                # (N, 1, 1)
        return len(logits), int((~near_ties(logits, u, cfg, tol)).sum())


@torch.no_grad()
def check_step(step_graph: StepGraph, fp32_graph: StepGraph, ort_path: Path, dtype: str, batch: int,
               seed: int = 0, steps: int = ROLLOUT_STEPS, device: str = "cpu") -> dict:
    """One step on random inputs (the whole state range, not only a rollout's), then a `steps`-step
    rollout from a random context and zero state with actions sweeping [-1, 1]; see the module doc.
    step_graph: eager torch at the export's precision; fp32_graph: the same model in fp32 (the
    fp64 reference is made from it)."""
    cfg = step_graph.sampling
    ref = StepGraph(fp32_graph.model, cfg, torch.float64)
    ort = _Ort(ort_path, device)
    gen = torch.Generator().manual_seed(seed)
    tokens, actions, noise, *state = step_graph.example_inputs(batch)
    zeros = [torch.zeros_like(s) for s in state]
    sides = {"eager": _Side(step_graph, list(state)), "onnxruntime": _Side(ort, list(state))}
    for t in range(steps + 1):
        if t == 1:                                         # the rollout starts from zero state
            for side in sides.values():
                side.state = list(zeros)
            ref_state = zeros
        r = ref(tokens, actions.double(), noise, *[s.double() for s in (state if t == 0 else ref_state)])
        for side in sides.values():
            side.step(tokens, actions, noise, r)
        # Both sides continue from the reference's tokens: one that sampled a near-tie differently
        # is reset to them (its own state runs on), so every step stays comparable.
        tokens, ref_state = r[0], list(r[2:])
        actions = torch.rand(batch, 4, generator=gen) * 2 - 1
        actions[:, 2:] = actions[:, 2:].round()            # movement keys: held or not, mostly
        noise = torch.rand(tokens.shape, generator=gen)
    e_torch = sides["eager"].err
    tol = {k: 2 * e_torch[k] + FLOOR[dtype] for k in e_torch}
    report = {"steps": steps, "batch": batch, "positions": (steps + 1) * tokens.numel(),
              "tolerance": tol, "eager_error": e_torch, "ort_error": sides["onnxruntime"].err}
    for name, side in sides.items():
        n, outside = side.mismatches(cfg, tol["logits"])
        report[f"{name}_token_mismatches"] = n            # all of them near-ties, unless counted below
        report[f"{name}_mismatches_not_near_ties"] = outside
    failures = [f"step: onnxruntime {k} error {sides['onnxruntime'].err[k]:.3g} > tolerance {tol[k]:.3g} "
                f"(2 x eager torch's {e_torch[k]:.3g} + {FLOOR[dtype]:g})"
                for k in tol if not sides["onnxruntime"].err[k] <= tol[k]]
    if report["onnxruntime_mismatches_not_near_ties"]:
        failures.append(f"step: {report['onnxruntime_mismatches_not_near_ties']} sampled tokens differ from the "
                        "fp64 reference where no near-tie explains it")
    return {**report, "failures": failures}


def _code_distances(tokenizer, fp32_tokenizer, frames: torch.Tensor, codes: list[torch.Tensor]) -> tuple[list, list]:
    """Squared distances from each position's latent to the given codes, in fp64 (the reference, made
    from the fp32 tokenizer) and in `tokenizer`'s own precision: frames uint8 (B, H, W, 3), codes
    [(B, h, w)] -> ([d64], [d])."""
    ref = copy.deepcopy(fp32_tokenizer).double()
    x = frames.permute(0, 3, 1, 2)
    z64 = ref.encoder(x.double() / 127.5 - 1).permute(0, 2, 3, 1)                     # (B, h, w, D)
    z = tokenizer.encoder(tokenizer.normalize(x)).permute(0, 2, 3, 1)
    d64 = [((z64 - ref.codebook[c]) ** 2).sum(-1) for c in codes]
    d = [((z - tokenizer.codebook[c]) ** 2).sum(-1).double() for c in codes]
    return d64, d


@torch.no_grad()
def check_encode(encode_graph, ort_path: Path, dtype: str, batch: int, seed: int = 0, device: str = "cpu",
                 fp32_graph=None) -> dict:
    """Random frames and smooth ones (random frames make many near-equidistant codes). A position
    where ONNX Runtime picks another code than eager torch is a near tie when, in fp64, the two
    codes' distances differ by at most twice eager torch's own error in those distances (either
    side's rounding may order them either way); near ties are left out of the agreement, as the
    step's sampled tokens are. fp32_graph: the same tokenizer in fp32 (default: encode_graph's)."""
    fp32_tokenizer = (fp32_graph or encode_graph).tokenizer
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (batch, 64, 64, 3), dtype=torch.uint8, generator=gen)
    ramp = torch.linspace(0, 255, 64)
    smooth = (ramp[None, :, None, None] * torch.rand(batch, 1, 1, 3, generator=gen)
              + ramp[None, None, :, None] * torch.rand(batch, 1, 1, 3, generator=gen)).clamp(0, 255).to(torch.uint8)
    ort, agree, total, ties = _Ort(ort_path, device), 0, 0, 0
    for frames in (noise, smooth):
        a, b = encode_graph(frames), ort(frames)[0]
        (da64, db64), (da, db) = _code_distances(encode_graph.tokenizer, fp32_tokenizer, frames, [a, b])
        tol = 2 * max(_err(da, da64), _err(db, db64))
        tie = (a != b) & ((da64 - db64).abs() <= tol)
        agree, total, ties = agree + int((a == b).sum()), total + a.numel() - int(tie.sum()), ties + int(tie.sum())
    report = {"agreement": agree / total, "positions": total, "near_ties": ties, "required": ENCODE_AGREEMENT[dtype]}
    ok = report["agreement"] >= ENCODE_AGREEMENT[dtype]
    return {**report, "failures": [] if ok else [f"encode: onnxruntime tokens agree with eager torch on "
                                                  f"{report['agreement']:.4%} of positions (near ties left out) "
                                                  f"< {report['required']:.1%}"]}


@torch.no_grad()
def check_decode(decode_graph, fp32_graph: DecodeGraph, ort_path: Path, dtype: str, batch: int,
                 seed: int = 0, device: str = "cpu") -> dict:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, fp32_graph.tokenizer.config.codebook_size, (batch, 16, 16), generator=gen)
    view = torch.rand(batch, VIEW, generator=gen) - 0.5              # sub-token shifts, a zoom within ±0.5
    ref = DecodeGraph(fp32_graph.tokenizer, torch.float64)
    r, e, o = ref(tokens, view.double()), decode_graph(tokens, view), _Ort(ort_path, device)(tokens, view)[0]
    e_torch, e_ort = _err(e, r), _err(o, r)
    tol = max(2 * e_torch, 1.0)
    report = {"eager_error": e_torch, "ort_error": e_ort, "tolerance": tol,
              "pixels_off": int((o != r).sum()), "pixels": r.numel()}
    ok = e_ort <= tol
    return {**report, "failures": [] if ok else [f"decode: onnxruntime frames differ from the fp64 decode by "
                                                  f"{e_ort:g} levels > {tol:g} (2 x eager torch's {e_torch:g}, "
                                                  "at least 1)"]}


def check_export(graphs: dict, fp32_graphs: dict, onnx_dir, dtype: str, batch: int,
                 steps: int = ROLLOUT_STEPS, device: str = "cpu") -> dict:
    """Every check, ONNX Runtime on `device` (the torch sides and the reference on the CPU);
    report["failures"] lists what failed (empty: passed)."""
    onnx_dir = Path(onnx_dir)
    report = {
        "step": check_step(graphs["step"], fp32_graphs["step"], onnx_dir / "step.onnx", dtype, batch, steps=steps,
                           device=device),
        "encode": check_encode(graphs["encode"], onnx_dir / "encode.onnx", dtype, batch, device=device,
                               fp32_graph=fp32_graphs["encode"]),
        "decode": check_decode(graphs["decode"], fp32_graphs["decode"], onnx_dir / "decode.onnx", dtype, batch,
                               device=device),
    }
    report["failures"] = [f for part in report.values() for f in part["failures"]]
    report["passed"] = not report["failures"]
    report["device"] = device
    return report
