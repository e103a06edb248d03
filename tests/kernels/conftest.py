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
