"""What every measurement records and how it times: the environment (device, versions, git SHA,
date) and honest summary statistics. The library's own timings (`ochre demo`'s decode bench) and
the benchmarks in ochre.bench share it; the library never imports ochre.bench
(docs/architecture.md#layout-and-layers)."""

from __future__ import annotations

import datetime as _dt
import platform
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ochre.parallel import cpu_count


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str = "cpu") -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({cpu_count()} cores)"


def device_tag(device: str = "cpu") -> str:
    """A device's name in result file names: "cpu", or the GPU's full name as a slug
    ("NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"; its last word alone would say "hbm3")."""
    if not device.startswith("cuda"):
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "triton", "numpy", "decord", "webdataset", "av", "onnxruntime"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def header(device: str = "cpu") -> dict:
    return {"device": device_name(device), "git_sha": git_sha(), "versions": versions(),
            "date": _dt.date.today().isoformat()}


def stats_ms(samples_s: list[float]) -> dict:
    a = np.asarray(samples_s) * 1e3
    return {"ms_p50": float(np.median(a)), "ms_p99": float(np.percentile(a, 99)), "runs": len(a)}


def time_calls(fn: Callable[[], object], *, warmup: int = 3, runs: int = 20, sync=None) -> list[float]:
    """Wall time of each call after `warmup` untimed calls; `sync` (e.g. torch.cuda.synchronize)
    runs before each clock read so asynchronous device work is inside the measurement."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out
