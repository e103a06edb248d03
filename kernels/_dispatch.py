"""Which tensors the Triton kernels run on: the one place that decides CUDA/interpreter vs torch.

Triton is optional (no wheels for macOS or Windows): without it every op runs its torch
reference. With it, kernels run on CUDA tensors, and on CPU tensors only when Triton was
put in interpreter mode (TRITON_INTERPRET=1) before the kernel modules were imported.
"""

from __future__ import annotations

import torch

try:
    import triton  # noqa: F401
    HAS_TRITON = True
except ImportError:
    HAS_TRITON = False

if HAS_TRITON:
    from ochre.kernels import nearest_code_triton

    # @triton.jit reads TRITON_INTERPRET when it decorates, so ask a kernel what it became
    # instead of re-reading the variable (which may have changed since the import).
    INTERPRET = nearest_code_triton.INTERPRETED
else:
    INTERPRET = False


def triton_device_reason(device: torch.device) -> str | None:
    """None when the Triton kernels can run on `device`, else why not (for error messages)."""
    if not HAS_TRITON:
        return "triton is not installed (Linux x86_64 wheels only); use impl='torch'"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and INTERPRET:
        return None
    return (f"Triton kernels run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1 is set "
            f"before ochre.kernels is imported; got a {device.type} tensor")
