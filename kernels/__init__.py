"""Triton kernels, their torch.library ops and pure-torch references (ochre.kernels)."""
