"""ctest fixture: a small world model and tokenizer with seeded random weights, exported with
`ochre export --format aoti` (which checks the packages against eager torch), and an action file.

    python native/ctest_fixture.py OUT [--batch 2]
writes OUT/tokenizer, OUT/world (checkpoints), OUT/packages (the .pt2 folder), OUT/actions.txt.
Random weights exercise every op of the trained model's graph at the tiny preset's shapes; the
parity tests compare arithmetic, not dream quality. A folder already complete, and runnable by
this install (read_manifest), is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch


def make_runs(out: Path, seed: int = 0) -> None:
    from ochre.models.dynamics import Dynamics, DynamicsConfig
    from ochre.models.sampling import SamplingConfig
    from ochre.models.tokenizer import Tokenizer, TokenizerConfig
    from ochre.train.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    save_checkpoint(out / "tokenizer", 0, Tokenizer(TokenizerConfig.preset("tiny")))
    save_checkpoint(out / "world", 0, Dynamics(DynamicsConfig.preset("tiny")),
                    extra={"sampling": dataclasses.asdict(SamplingConfig())})


def write_actions(path: Path, steps: int, seed: int = 0) -> None:
    """Random actions in the action-file format (docs/data.md#action-files), with a comment, commas and
    one value out of range."""
    acts = np.random.default_rng(seed).uniform(-1, 1, (steps, 4)).round(4)
    acts[3, 0] = 1.5                                          # clamped to 1 by both loops
    lines = ["# yaw pitch move_x move_z (ctest fixture)"]
    lines += [(", " if i % 2 else " ").join(f"{v:g}" for v in row) for i, row in enumerate(acts)]
    path.write_text("\n".join(lines[:5] + [""] + lines[5:]) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=24, help="rows of the action file")
    args = p.parse_args(argv)
    from ochre.export.aoti import export_aoti, read_manifest
    from ochre.models.lookup import from_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "world" / "checkpoints").is_dir():
        make_runs(out)
    write_actions(out / "actions.txt", args.steps)
    try:        # reused only if this install can run it (format, torch version, CPU) at this batch
        current = read_manifest(out / "packages")["batch"] == args.batch
    except (FileNotFoundError, ValueError):
        current = False
    if not current:
        model = from_run(out / "world", tokenizer=out / "tokenizer")
        m = export_aoti(model, out / "packages", batch=args.batch, check_steps=8)
        print(f"exported at batch {args.batch}: compile s {m['compile_s']}; parity {m['parity']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
