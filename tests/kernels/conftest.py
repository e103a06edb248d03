"""The kernel tests run the real kernels: interpreted on CPU (TRITON_INTERPRET=1, set before
anything imports ochre.kernels) or compiled on CUDA. A plain `pytest` on a CPU machine has
neither and must not switch the interpreter on for the whole process (every model test would
then run interpreted kernels), so this folder is not collected there; tests/test_kernels.py
runs it in a subprocess with TRITON_INTERPRET=1."""

import pytest
import torch
from kernel_env import CAN_RUN, DEVICE

collect_ignore_glob = [] if CAN_RUN else ["test_*.py"]


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _fp32_is_fp32():
    """The references the kernels are held to are fp32 and fp64: on a GPU, cuDNN's convolutions
    (the world-model gate test's) would otherwise run TF32, a 10-bit mantissa."""
    from ochre.models.precision import strict_fp32

    strict_fp32(DEVICE)
