"""Which device a command runs on, and a word when that choice will be slow for a reason the
user may not know about (TRITON_INTERPRET=1 left in the environment)."""

from __future__ import annotations

import os
import sys

import torch

_warned = False


def pick_device(device: str | None = None, local_rank: int = 0) -> torch.device:
    """`device`, else cuda:LOCAL_RANK when CUDA is present, else the CPU."""
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cpu":
        warn_if_interpreted()
    return dev


def warn_if_interpreted() -> None:
    """Once per process: under TRITON_INTERPRET=1 the kernels run interpreted on CPU tensors."""
    global _warned
    if _warned or os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return
    from ochre.kernels import INTERPRET

    if INTERPRET:
        _warned = True
        # Measured on 2 cores: nearest-code search of 2048 vectors among 2048 codes (D = 32) takes
        # 49 s interpreted against 0.14 s on the torch path.
        print("ochre: warning: TRITON_INTERPRET=1 is set, so the Triton kernels (nearest-code search, "
              "codebook lookup) run in Triton's Python interpreter on CPU tensors: exact, but ~350x slower "
              "than the torch path. The interpreter exists to test the kernels without a GPU; unset "
              "TRITON_INTERPRET for real runs.", file=sys.stderr)
