"""Compile ochre's Triton kernels ahead of time into C sources (cubin embedded) with
`triton.tools.compile` and `triton.tools.link`, and write the reference values the C++ test
checks them against.

    python native/cuda/aot_compile.py OUT [--arch 90]
OUT/nearest_code_f32.{c,h}, OUT/film_gru_fwd_f32.{c,h}: dispatchers `nearest_code_f32_default`,
`film_gru_fwd_f32_default` (+ load_/unload_), over OUT/gen/NAME_spec.{c,h} (the one specialization);
OUT/ref/*.npy: inputs and expected outputs from ochre.kernels.reference, the spec the Python
kernel tests hold the Triton kernels to. No GPU is needed: the target is given, not detected.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
# a*b+c as one FMA, as the library launchers pin it (Triton 3.10 flips the default).
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
# (kernel, signature, grid, warps): tiles as the library launchers pick them for the model's
# shapes (kernels/*_triton.py gpu_config: fp32 D <= 64 takes 64-row tiles at 8 warps; 16x16
# grids one channel a program at 2 warps).
KERNELS = [
    ("nearest_code_f32", "*fp32:16, *fp32:16, *i64:16, i32, i32, i32, 64, 64, 64", "(N + 63) / 64, 1, 1", 8),
    ("film_gru_fwd_f32", "*fp32:16, *fp32:16, *fp32:16, *fp32:16, *fp32:16, i32, i32, i32, 1, 256",
     "B * C, 1, 1", 2),
]


def _compile_only_driver(arch: int) -> None:
    """Without a GPU Triton has no active driver, and triton.tools.compile asks the driver only for
    the target and the C type of each argument: answer with the CUDA backend's own mapping."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.driver import ty_to_cpp

    try:
        triton.runtime.driver.active.get_current_target()
    except RuntimeError:
        class CompileOnly:
            map_python_to_cpp_type = staticmethod(ty_to_cpp)

            @staticmethod
            def get_current_target():
                return GPUTarget("cuda", arch, 32)
        triton.runtime.driver.set_active(CompileOnly())


def _launchers(out: Path, arch: int) -> None:
    from triton.tools.compile import CompileArgs, compile_kernel

    _compile_only_driver(arch)
    gen = out / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    for name, signature, grid, warps in KERNELS:
        for old in gen.glob(f"{name}.*"):
            old.unlink()
        _, files = compile_kernel(CompileArgs(path=str(HERE / "aot_entry.py"), kernel_name=name,
                                              signature=signature, grid=grid, target=f"cuda:{arch}:32",
                                              num_warps=warps, num_stages=2, out_name=name, out_path=gen / name))
        # Files are named by a signature hash; stable names let CMake list them before they exist.
        for f in files:
            f.replace(gen / f"{name}_spec{f.suffix}")
        subprocess.run([sys.executable, "-m", "triton.tools.link", str(gen / f"{name}_spec.h"), "-o", str(out / name)],
                       check=True)


def _references(out: Path) -> None:
    from ochre.kernels.reference import film_gru_step_ref, nearest_code_ref

    ref = out / "ref"
    ref.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    # Awkward sizes: N and K not multiples of the 64-row tiles, D below BLOCK_D (masked).
    z, codebook = torch.randn(1000, 32, generator=gen), torch.randn(300, 32, generator=gen)
    idx = nearest_code_ref(z, codebook)
    d = torch.cdist(z.double(), codebook.double()).square()                       # (N, K) fp64
    top2 = d.topk(2, dim=1, largest=False).values
    tie = (top2[:, 1] - top2[:, 0]) / (1 + top2[:, 0]) < 1e-4                      # rows either code may win
    B, C, H, W = 2, 5, 16, 16
    gx, gh = torch.randn(B, 3 * C, H, W, generator=gen), torch.randn(B, 3 * C, H, W, generator=gen)
    h, film = torch.randn(B, C, H, W, generator=gen), torch.randn(B, 6 * C, generator=gen) * 0.5
    arrays = {"z": z, "codebook": codebook, "idx": idx, "tie": tie.to(torch.uint8), "gx": gx, "gh": gh, "h": h,
              "film": film, "h_next": film_gru_step_ref(gx, gh, h, film)}
    for name, t in arrays.items():
        np.save(ref / f"{name}.npy", t.contiguous().numpy())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--arch", type=int, default=90, help="SM version to compile for (default 90: H100/H200)")
    args = p.parse_args(argv)
    out = Path(args.out)
    _launchers(out, args.arch)
    _references(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
