"""ONNX Runtime, imported and opened in one place (docs/runtime.md#onnx-runtime), for the parity
checks of `ochre export` and the `onnxruntime` backend alike.

Three ways ONNX Runtime can run somewhere else than asked, or fail past an `except RuntimeError`:
- `onnxruntime` (CPU) and `onnxruntime-gpu` are two distributions of one module, `onnxruntime`;
  installed side by side, the second overwrites the files of the first and which one runs is an
  accident of install order. `load()` refuses such an install in one line that says how to fix it.
- A session asked for CUDA whose CUDA provider cannot load (no CUDA or cuDNN libraries of the
  version the wheel was built for) falls back to the CPU with a logged warning and runs on.
  `session()` reads the providers the session really has (`get_providers()`) and refuses it.
- Its errors are its own classes, derived from Exception, not RuntimeError: `errors()` lists them
  for the `except` clauses of callers that report errors instead of crashing.
fp32 on CUDA means fp32: the CUDA provider's TF32 (its default for convolutions and GEMMs since
1.17) is switched off, as torch's is for the fp32 rows (ochre.models.precision.strict_fp32).
"""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
GPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime-gpu>=1.18'"
CPU_INSTALL = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'onnxruntime>=1.18'"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OrtInstallError(ImportError):
    """onnxruntime and onnxruntime-gpu installed together: one module, two owners."""


class ProviderFallback(RuntimeError):
    """A session that does not run on the device it was asked for."""


def installed() -> list[str]:
    """The distributions of the `onnxruntime` module installed here (normally one)."""
    found = []
    for name in DISTRIBUTIONS:
        try:
            md.version(name)
            found.append(name)
        except md.PackageNotFoundError:
            pass
    return found


def load():
    """The onnxruntime module, refusing an install with both distributions (see the module doc)."""
    found = installed()
    if len(found) > 1:
        raise OrtInstallError(
            f"both {' and '.join(found)} are installed; they share the `onnxruntime` module and overwrite each "
            f"other's files, so which one runs is an accident. Keep one: `{GPU_INSTALL}` on a CUDA machine "
            f"(the [gpu] extra), else `{CPU_INSTALL}`")
    import onnxruntime

    return onnxruntime


def errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (Fail, InvalidArgument, EPFail, ...), for `except`
    clauses; () where onnxruntime cannot be imported. Never raises."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except Exception:       # a broken onnxruntime install has no error classes to catch
        return ()
    return tuple(v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))


def check_providers(got: list[str], device: str, what) -> None:
    """Raise ProviderFallback unless the session's providers `got` (`get_providers()`, in priority
    order) put `device`'s provider first."""
    want = PROVIDERS[device]
    if not got or got[0] != want:
        raise ProviderFallback(
            f"{what}: onnxruntime was asked for {device} but the session runs on {', '.join(got) or 'nothing'} "
            f"(its {want} did not load: see onnxruntime's warning above; onnxruntime-gpu needs the CUDA and "
            f"cuDNN libraries it was built for). Install them, or run the onnxruntime backend on the CPU")


def provider_options(device: str, device_id: int = 0) -> list:
    """The providers a session on `device` is opened with; CUDA's with TF32 off (fp32 means fp32)."""
    if device == "cuda":
        return [(PROVIDERS["cuda"], {"device_id": device_id, "use_tf32": 0}), PROVIDERS["cpu"]]
    if device != "cpu":
        raise ValueError(f"onnxruntime runs on cpu or cuda, not {device!r}")
    return [PROVIDERS["cpu"]]


def session(path, device: str = "cpu", options=None):
    """An InferenceSession of the ONNX file `path` on `device`; raises ProviderFallback where
    it would run elsewhere, and RuntimeError where this onnxruntime has no CUDA provider at all."""
    ort = load()
    if device == "cuda" and PROVIDERS["cuda"] not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} ({', '.join(installed())}) has no CUDA provider: "
                           f"`{GPU_INSTALL}` (the [gpu] extra)")
    sess = ort.InferenceSession(str(Path(path)), options, providers=provider_options(device))
    check_providers(sess.get_providers(), device, path)
    return sess
