"""The fused nearest-code kernel against the reference and an fp64 search (ochre.kernels.testing).

Legend: N vectors, D code dim, K codebook size. Interpreted shapes stay tiny: the
interpreter runs each program in numpy, one at a time.
"""

from __future__ import annotations

import pytest
import torch
from kernel_env import needs_compiled_cuda

from ochre.kernels import INTERPRET, nearest_code, nearest_code_ref
from ochre.kernels.nearest_code_triton import NearestCodeConfig, gpu_config, nearest_code_triton
from ochre.kernels.testing import assert_nearest_code

# (N, D, K): nothing a multiple of a tile; one row; K and D below the 16-wide minimum tile;
# exact multiples; several K tiles with a remainder.
SHAPES = [(37, 13, 71), (1, 32, 40), (20, 3, 5), (64, 16, 64), (50, 64, 130)]
# Interpreter tiles (16x16: many K tiles), the CUDA default tile widths (64x64), and a
# K tile wider than every K above (one partly masked tile).
CONFIGS = [NearestCodeConfig(16, 16), NearestCodeConfig(64, 64), NearestCodeConfig(32, 128)]
FLOATS = [torch.float32, torch.float16]


def _ids(v):
    return "x".join(map(str, v)) if isinstance(v, tuple) else None


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"bn{c.block_n}-bk{c.block_k}")
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_matches_reference_on_awkward_shapes(shape, config, dtype, device):
    n, d, k = shape
    z = torch.randn(n, d, device=device).to(dtype)
    codebook = torch.randn(k, d, device=device).to(dtype)
    idx = nearest_code_triton(z, codebook, config)
    ref = nearest_code_ref(z, codebook)
    # Every row within the fp32 bound of the fp64 argmin, every clear row identical to the
    # reference, and >= 90% of rows clear (Gaussian data: the median gap between the two
    # nearest codes is ~4% of the distance, the bound ~1e-5 of it).
    assert_nearest_code(idx, z, codebook, ref, min_clear=0.9)


@pytest.mark.parametrize("d", [3, 13, 64])
def test_well_separated_codes_match_exactly(d, device):
    n, k = 37, 71
    codebook = torch.randn(k, d, device=device)
    target = torch.randint(0, k, (n,), device=device)
    z = codebook[target] + 1e-3 * torch.randn(n, d, device=device)
    idx = nearest_code(z, codebook, impl="triton")
    assert_nearest_code(idx, z, codebook, nearest_code_ref(z, codebook), min_clear=1.0)
    assert torch.equal(idx, target)
    assert torch.equal(idx, nearest_code_ref(z, codebook))


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("config", CONFIGS[:2], ids=lambda c: f"bn{c.block_n}-bk{c.block_k}")
def test_exact_ties_go_to_the_lowest_index(config, dtype, device):
    # Small integers: every product and sum is exact in fp16/fp32 whatever the order, so
    # equal distances are bitwise equal and only the tie rule decides.
    n, d, k = 40, 13, 71
    codebook = torch.randint(-3, 4, (k, d), device=device).float()
    dup = [5, 20, 21, 60, 66]  # within a 16-tile (20, 21), across 16-tiles, across the 64-tile edge
    codebook[dup] = codebook[dup[0]].clone()
    z = torch.randint(-3, 4, (n, d), device=device).float()
    z[:8] = codebook[5]                                 # distance 0 to every duplicate
    z[8:16] = codebook[5] + torch.randint(-1, 2, (8, d), device=device).float()
    exact = torch.cdist(z.double(), codebook.double()).square()                      # (N, K) exact
    expected = (exact == exact.min(1, keepdim=True).values).int().argmax(1)          # first minimum
    idx = nearest_code_triton(z.to(dtype), codebook.to(dtype), config)
    assert torch.equal(idx, expected)
    assert torch.equal(idx[:8], torch.full((8,), 5, device=device))
    assert torch.equal(nearest_code_ref(z, codebook), expected)


def test_empty_batch_and_strided_inputs(device):
    codebook = torch.randn(71, 13, device=device)
    assert nearest_code_triton(torch.empty(0, 13, device=device), codebook).shape == (0,)
    z_wide = torch.randn(37, 26, device=device)
    z = z_wide[:, ::2]                                            # (37, 13), inner stride 2
    codebook_t = torch.randn(13, 71, device=device).T             # (71, 13), strides (1, 71)
    idx = nearest_code_triton(z, codebook_t)
    assert_nearest_code(idx, z, codebook_t, nearest_code_ref(z, codebook_t))


def test_launcher_rejects_bad_inputs(device):
    z, codebook = torch.randn(4, 8, device=device), torch.randn(6, 8, device=device)
    with pytest.raises(ValueError, match="D=8 but the codebook has D=9"):
        nearest_code_triton(z, torch.randn(6, 9, device=device))
    with pytest.raises(ValueError, match="K=0"):
        nearest_code_triton(z, torch.empty(0, 8, device=device))
    with pytest.raises(TypeError, match="share one of"):
        nearest_code_triton(z, codebook.half())
    with pytest.raises(ValueError, match="D=129"):
        nearest_code_triton(torch.randn(4, 129, device=device), torch.randn(6, 129, device=device))
    with pytest.raises(ValueError, match="must be"):
        nearest_code_triton(z[0], codebook)


@pytest.mark.skipif(not INTERPRET, reason="interpreter-only limitation")
def test_interpreter_bf16_falls_back_in_auto_and_raises_in_triton(device):
    z, codebook = torch.randn(37, 13).bfloat16(), torch.randn(71, 13).bfloat16()
    assert torch.equal(nearest_code(z, codebook), nearest_code_ref(z, codebook))
    with pytest.raises(RuntimeError, match="no bfloat16"):
        nearest_code(z, codebook, impl="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("d", [32, 64])
@pytest.mark.parametrize("n", [1, 1000, 65536])
@pytest.mark.gpu
@needs_compiled_cuda
def test_gpu_design_shapes(n, d, dtype):
    k = 2048
    z = torch.randn(n, d, device="cuda").to(dtype)
    codebook = torch.randn(k, d, device="cuda").to(dtype)
    idx = nearest_code(z, codebook, impl="triton")
    assert_nearest_code(idx, z, codebook, nearest_code_ref(z, codebook), min_clear=0.9)


@pytest.mark.gpu
@needs_compiled_cuda
def test_gpu_configs_cover_every_tile_choice():
    # Each N lands on a different BLOCK_N of gpu_config; D=128 takes the narrow fp32 cap.
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    seen = set()
    for n in [100, 4096, 8192, 16384, 65536]:
        for d, dtype in [(13, torch.float32), (128, torch.float32), (64, torch.bfloat16)]:
            z = torch.randn(n, d, device="cuda").to(dtype)
            codebook = torch.randn(300, d, device="cuda").to(dtype)
            seen.add(gpu_config(n, max(16, 1 << (d - 1).bit_length()), dtype, sms))
            assert_nearest_code(nearest_code_triton(z, codebook), z, codebook, min_clear=0.9)
    assert len({c.block_n for c in seen}) >= 3


@pytest.mark.gpu
@needs_compiled_cuda
def test_gpu_mixed_dtypes_promote():
    z = torch.randn(4096, 64, device="cuda", dtype=torch.bfloat16)      # autocast-style activations
    codebook = torch.randn(2048, 64, device="cuda")
    idx = nearest_code(z, codebook, impl="triton")
    assert_nearest_code(idx, z.float(), codebook, nearest_code_ref(z, codebook), min_clear=0.9)
