"""Where the kernel tests run: interpreted on CPU (TRITON_INTERPRET=1) or compiled on CUDA."""

import pytest
import torch

from ochre.kernels import HAS_TRITON, INTERPRET

CAN_RUN = HAS_TRITON and (INTERPRET or torch.cuda.is_available())
DEVICE = torch.device("cpu" if INTERPRET else "cuda")  # CPU under the interpreter, even beside a GPU
needs_compiled_cuda = pytest.mark.skipif(INTERPRET or not torch.cuda.is_available(),
                                         reason="needs compiled Triton on CUDA")
