"""Device choice: TRITON_INTERPRET=1 left in the environment makes a CPU run say so, once; the
training precision that auto picks; where the demo compiles."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ochre.kernels import HAS_TRITON


@pytest.mark.skipif(not HAS_TRITON, reason="without triton there is no interpreter to warn about")
def test_interpreted_kernels_on_a_cpu_run_warn_once():
    # The device choice of every training run (tokenize goes through the same pick_device).
    code = "from ochre.train.distributed import setup; setup('cpu'); setup(None); print('ran')"
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ran", r.stderr
    assert r.stderr.count("TRITON_INTERPRET=1 is set") == 1, r.stderr
    assert "interpreter" in r.stderr and "slower" in r.stderr and "unset TRITON_INTERPRET" in r.stderr
    env.pop("TRITON_INTERPRET")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "TRITON_INTERPRET" not in r.stderr, r.stderr


@pytest.mark.exact
def test_exact_tests_run_under_deterministic_algorithms_and_strict_fp32():
    """What the `exact` marker promises (conftest.py): an op without a deterministic implementation
    raises there instead of varying, TF32 is off, and the subprocess runner has the same mode."""
    import torch
    from exactness import DETERMINISM, DETERMINISTIC_OCHRE

    from ochre.models.precision import math_settings

    assert math_settings() == {"tf32_cudnn": False, "tf32_matmul": False, "deterministic": True}
    with pytest.raises(RuntimeError, match="deterministic"):
        torch.zeros(3).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
    code = DETERMINISM + "print(torch.are_deterministic_algorithms_enabled())"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "True" and DETERMINISTIC_OCHRE[2].startswith(DETERMINISM), r.stderr


def test_other_tests_run_as_ochre_runs():
    import torch

    assert not torch.are_deterministic_algorithms_enabled()


def test_auto_precision_is_bf16_only_where_the_hardware_has_bf16_units(monkeypatch):
    import torch

    from ochre.device import train_precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert train_precision(cpu) == "fp32" and train_precision(cpu, "bf16") == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert train_precision(cpu) == "bf16" and train_precision(cpu, "fp32") == "fp32"
    assert train_precision(cpu, cpu_bf16=False) == "fp32"            # a trainer where bf16 does not pay on a CPU
    assert train_precision(torch.device("cuda")) == "bf16"
    assert train_precision(torch.device("cuda"), cpu_bf16=False) == "bf16"
    with pytest.raises(ValueError, match="auto, bf16, fp32"):
        train_precision(cpu, "fp16")


def test_the_demo_compiles_where_compiling_pays(monkeypatch):
    """compile_pays: on a GPU and on an AVX-512 CPU; not on an AVX2-only CPU, where the compiled train step was no
    faster than eager after a four-minute compile (ochre.device.compile_pays)."""
    import torch

    from ochre.device import compile_pays

    cpu = torch.device("cpu")
    for capability, pays in (("AVX2", False), ("AVX512", True), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert compile_pays(cpu) is pays
    assert compile_pays(torch.device("cuda"))


# A batch-32 live step of the ochre model (random weights): its (B, h, w, K) logits and their
# temporaries are 64 MB each. Prints whether the settings are in force and the page faults per step
# once warm (the last of 10 steps).
_FAULTS = """
import resource, torch
from ochre.device import keep_large_blocks
from ochre.models.dynamics import Dynamics, DynamicsConfig
from ochre.models.sampling import SamplingConfig
from ochre.models.step import live_step
kept = keep_large_blocks()
torch.manual_seed(0)
model = Dynamics(DynamicsConfig.preset("tiny", memory=True)).eval()
B = 32
tokens, state = torch.randint(0, 2048, (B, 16, 16)), model.init_state(B, torch.device("cpu"))
faults = []
with torch.no_grad():
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        tokens, _, state = live_step(model, tokens, torch.zeros(B, 4), torch.rand(B, 16, 16), state, SamplingConfig())
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(kept, min(faults[-3:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the allocator settings are glibc's")
def test_a_batched_live_step_reuses_its_large_blocks_instead_of_faulting_them_in_again():
    """ochre.device.keep_large_blocks: under glibc's defaults (OCHRE_MALLOC=system) every batch-32 live
    step maps its 64 MB logits afresh, a 4 KiB page fault for each of their 16384 pages and more for
    the temporaries; with the settings every command runs under, a warm step takes its blocks back
    from the heap and faults (almost) none in."""
    def faults(**env):
        r = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, timeout=300,
                           env={**os.environ, **env})
        assert r.returncode == 0, r.stderr
        kept, per_step = r.stdout.split()
        return kept == "True", int(per_step)

    kept, warm = faults()
    if not kept:
        pytest.skip("not glibc: the allocator is left alone")
    system, cold = faults(OCHRE_MALLOC="system")
    assert not system and cold >= 16384
    assert warm < 1000
