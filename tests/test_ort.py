"""ONNX Runtime in one place (export/ort.py, docs/runtime.md#onnx-runtime): a CPU and a GPU package
installed together are refused, a session asked for CUDA that runs on the CPU is refused (or, in
the bench, labelled cpu), ONNX Runtime's own errors are caught where ochre reports errors."""

from __future__ import annotations

import pytest

from ochre.export import ort
from ochre.models.lookup import from_run


def test_a_mixed_install_is_refused_in_one_line_with_the_fix(monkeypatch):
    monkeypatch.setattr(ort, "installed", lambda: ["onnxruntime", "onnxruntime-gpu"])
    with pytest.raises(ort.OrtInstallError, match="both onnxruntime and onnxruntime-gpu are installed") as e:
        ort.load()
    assert ort.GPU_INSTALL in str(e.value) and "\n" not in str(e.value)
    assert issubclass(ort.OrtInstallError, ImportError)           # the bench's and export's except clauses


def test_a_cuda_session_that_fell_back_to_the_cpu_is_refused(monkeypatch, onnx_b1):
    """The CUDA provider failing to load (no cuDNN, say) leaves a session on the CPU; the providers
    the session really has are read back and checked."""
    rt = ort.load()
    asked = []

    class FellBack:                       # what InferenceSession gives when CUDA's provider did not load
        def __init__(self, path, options=None, providers=None):
            asked.append(providers)

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(rt, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(rt, "InferenceSession", FellBack)
    with pytest.raises(ort.ProviderFallback, match="asked for cuda but the session runs on CPUExecutionProvider"):
        ort.session(onnx_b1 / "step.onnx", "cuda")
    assert asked == [[("CUDAExecutionProvider", {"device_id": 0, "use_tf32": 0}), "CPUExecutionProvider"]]
    ort.check_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda", "x.onnx")
    ort.check_providers(["CPUExecutionProvider"], "cpu", "x.onnx")
    with pytest.raises(ort.ProviderFallback):
        ort.check_providers([], "cpu", "x.onnx")


def test_without_a_cuda_provider_the_gpu_bench_runs_onnxruntime_as_the_cpu_reference():
    from ochre.runtime.bench import _ort_device

    if ort.PROVIDERS["cuda"] in ort.load().get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    assert _ort_device("cuda") == "cpu" and _ort_device("cpu") == "cpu"
    with pytest.raises(RuntimeError, match="has no CUDA provider.*onnxruntime-gpu"):
        ort.session("any.onnx", "cuda")


def test_sessions_record_their_providers_and_parity_reruns_on_a_device(live_world, onnx_b1):
    from ochre.export.cli import device_parity
    from ochre.runtime.stepper import make_stepper

    stepper = make_stepper("onnxruntime", onnx_dir=onnx_b1)
    assert stepper.providers == ["CPUExecutionProvider"] and stepper.device == "cpu"
    report = device_parity(from_run(live_world), onnx_b1, "cpu", steps=2)
    assert report["passed"] and report["device"] == "cpu" and report["step"]["steps"] == 2


def test_onnxruntime_errors_are_not_runtime_errors_and_ochre_export_reports_them(monkeypatch, live_world,
                                                                                tmp_path, capsys):
    import ochre.export.cli as cli
    from ochre.cli import main

    fail = next(e for e in ort.errors() if e.__name__ == "Fail")
    assert not issubclass(fail, RuntimeError)

    def broken(*args, **kwargs):
        raise fail("[ONNXRuntimeError] : 1 : FAIL : Load model failed")
    monkeypatch.setattr(cli, "export_model", broken)
    assert main(["export", str(live_world), "--out", str(tmp_path / "x")]) == 2
    assert "ochre export: [ONNXRuntimeError] : 1 : FAIL : Load model failed" in capsys.readouterr().err
