"""ctest: ochre-native against Python on the fixture (native/ctest_fixture.py).

    python native/ctest_parity.py BINARY FIXTURE [--seed 7]
1. ochre-native and the Python `native` backend (the same packages, the same seed and actions)
   give identical tokens and frames, byte for byte.
2. Replayed in eager torch, teacher-forced on the native tokens with the same noise, every token
   matches except counted near-ties, and every frame is within 1 of eager's decode.
Exits non-zero with the report when either fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("binary")
    p.add_argument("fixture")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    from ochre.export.aoti import exact_decode, replay_eager
    from ochre.export.graph import DecodeGraph, StepGraph
    from ochre.models.checkpoint import load_dynamics, load_tokenizer
    from ochre.runtime.actions import ActionGuard, read_action_file
    from ochre.runtime.native import NativeStepper

    fx = Path(args.fixture)
    pkg = fx / "packages"
    with tempfile.TemporaryDirectory() as tmp:
        frames_path, tokens_path = Path(tmp) / "frames.npy", Path(tmp) / "tokens.npy"
        r = subprocess.run([args.binary, "--packages", str(pkg), "--actions", str(fx / "actions.txt"),
                            "--seed", str(args.seed), "--out", str(frames_path), "--tokens-out", str(tokens_path)],
                           capture_output=True, text=True)
        print(r.stdout + r.stderr, end="")
        if r.returncode != 0:
            return r.returncode
        frames, tokens = np.load(frames_path), np.load(tokens_path)

    stepper = NativeStepper(pkg, seed=args.seed)
    actions = read_action_file(fx / "actions.txt")
    py_frames, py_tokens = stepper.rollout(np.load(pkg / "context.npy"), actions)
    assert tokens.shape == py_tokens.shape and frames.shape == py_frames.shape, (tokens.shape, py_tokens.shape)
    same_tokens, same_frames = np.array_equal(tokens, py_tokens), np.array_equal(frames, py_frames)
    print(f"C++ vs Python native backend, {len(actions)} steps at batch {stepper.batch}: tokens "
          f"{'identical' if same_tokens else 'DIFFER'}, frames {'identical' if same_frames else 'DIFFER'}")

    model, sampling, _ = load_dynamics(fx / "world", impl="torch")
    tok = load_tokenizer(fx / "tokenizer", impl="torch")
    gen = torch.Generator().manual_seed(args.seed)
    B, g = tokens.shape[1], tokens.shape[2]
    noise = torch.stack([torch.rand(B, g, g, generator=gen) for _ in actions])                 # (S, B, h, w)
    guard = ActionGuard(B, report=lambda m: None)                   # what the loops made of the file's rows
    acts = torch.stack([torch.from_numpy(guard(a).copy()) for a in actions])                    # (S, B, 4)
    report = replay_eager(StepGraph(model, sampling), DecodeGraph(tok), exact_decode(tok), tokens, frames, acts, noise)
    s = report["step"]
    print(f"vs eager torch: {s['differ']} of {s['tokens']} tokens differ ({s['near_ties']} near-ties), "
          f"frames within {report['max_abs_err']['frames']} levels of the fp64 decode (eager torch "
          f"{report['max_abs_err']['frames_torch']})")
    return 0 if same_tokens and same_frames else 1


if __name__ == "__main__":
    sys.exit(main())
