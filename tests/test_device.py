"""Device choice: TRITON_INTERPRET=1 left in the environment makes a CPU run say so, once."""

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
