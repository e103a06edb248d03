"""Which device a command runs on, a word when that choice will be slow for a reason the user may
not know about (TRITON_INTERPRET=1 left in the environment), and the C allocator's settings every
command runs under (keep_large_blocks)."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from ochre.choices import TRAIN_PRECISIONS

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



def bf16_matmul_hardware(device: torch.device) -> bool:
    """Whether bf16 matrix products run in hardware here: a CUDA GPU, or a CPU with AMX tiles
    (oneDNN's bf16 convolutions and GEMMs; AVX-512 without AMX converts and gains little)."""
    if device.type == "cuda":
        return True
    is_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return device.type == "cpu" and bool(is_amx and is_amx())


def compile_pays(device: torch.device) -> bool:
    """Whether torch.compile's world-model train step earns back its compile within minutes: on a GPU, and on
    a CPU with AVX-512; not on an AVX2-only CPU, where the tiny preset's compiled step took 3.90 s against 3.97
    eager after a 247 s compile (bench/results/demo_cpu_2026-12-06_avx2.json), against 1.0 s and 1.9 s eager
    after ~100 s on a 2-core AVX-512 CPU."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def train_precision(device: torch.device, asked: str = "auto", cpu_bf16: bool = True) -> str:
    """The precision a training step runs in: "bf16" (autocast: convolutions and matrix products in
    bf16; reductions, losses and the weights in fp32) or "fp32". auto: bf16 on a GPU; on a CPU, bf16
    where the trainer measured that it pays (cpu_bf16) and the hardware has bf16 matrix units
    (bf16_matmul_hardware), else fp32. Measured in the default demo on a 2-core AMX CPU: the tiny
    tokenizer's 500 steps 324 -> 244 s with its eval (a step 0.73 -> 0.36 s alone), so its trainer
    says yes; the tiny world model's compiled step 3.0 -> 2.6 s, but its compile took about 150 s
    longer, fewer steps in the demo's minutes, so its trainer says no."""
    if asked not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {asked!r}")
    if asked == "auto":
        pays = device.type == "cuda" or cpu_bf16
        return "bf16" if pays and bf16_matmul_hardware(device) else "fp32"
    return asked


def train_autocast(device: torch.device, precision: str):
    """The autocast context of a training step in `precision` (train_precision's answer)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


# glibc's mallopt parameters (malloc.h) and the size below which blocks now stay in the heap.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
LARGE_BLOCK = 1 << 30
_allocator: bool | None = None


def keep_large_blocks() -> bool:
    """Let glibc's malloc reuse large freed blocks instead of handing them back to the kernel.

    By default glibc serves a block above its mmap threshold (which grows with use, to 32 MB at
    most) with a fresh mapping that it unmaps on free, so a loop that makes and drops a tensor that
    large pays every step for the kernel to fault in and zero its pages: the world model's
    (B, h, w, K) logits are 32 MB at batch 16, and the training step's are hundreds of MB. With the
    mmap and trim thresholds raised to 1 GiB such blocks come back from the heap warm. Measured on 2
    cores (the 2026-12-04 model, eager, fp32): a batch-32 live step plus its decode 7.5 -> 5.6 ms a
    frame; at batch 1 (2 MB logits) nothing changes. The price: memory freed by a peak stays with the
    process. Once per process; only on glibc (elsewhere, and with OCHRE_MALLOC=system, the allocator
    is left alone) -> whether the settings are in force."""
    global _allocator
    if _allocator is None:
        _allocator = False
        if os.environ.get("OCHRE_MALLOC", "") != "system" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
            except OSError:
                libc = None
            if libc is not None and hasattr(libc, "gnu_get_libc_version"):      # glibc, not musl
                _allocator = bool(libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
                                  and libc.mallopt(M_TRIM_THRESHOLD, LARGE_BLOCK))
    return _allocator
