"""ochre export: ONNX graphs at a static batch, and the parity check that fails an export loudly."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ochre.export import parity
from ochre.export.cli import ParityError, export_model
from ochre.models.lookup import from_run
from ochre.models.sampling import SamplingConfig

pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def world(live_world):
    return live_world


@pytest.fixture(scope="module")
def fp32_export(onnx_b1):
    return onnx_b1


def test_fp32_export_matches_eager_over_a_64_step_rollout(fp32_export):
    m = json.loads((fp32_export / "manifest.json").read_text())
    assert m["batch"] == 1 and m["dtype"] == "fp32" and m["fps"] == 8.0
    step = m["parity"]["step"]
    assert m["parity"]["passed"] and step["steps"] == 64
    # fp32: ONNX Runtime as close to fp64 as eager torch is, within 2x + 1e-5.
    assert step["ort_error"]["logits"] <= step["tolerance"]["logits"] < 1e-4
    assert step["onnxruntime_mismatches_not_near_ties"] == 0
    assert step["onnxruntime_token_mismatches"] <= 0.001 * step["positions"]      # near-ties are rare
    assert m["parity"]["encode"]["agreement"] >= 0.999 and m["parity"]["decode"]["ort_error"] <= 1
    for name in ("encode", "step", "decode"):
        assert (fp32_export / f"{name}.onnx").is_file()
    assert np.load(fp32_export / "contexts.npy").shape[1:] == (64, 64, 3)


def test_fp16_export_within_its_stated_tolerance(world, tmp_path):
    m = export_model(from_run(world), tmp_path, dtype="fp16", batch=2, steps=16, log=lambda m: None)
    step = m["parity"]["step"]
    assert m["parity"]["passed"] and m["batch"] == 2
    assert step["ort_error"]["logits"] <= step["tolerance"]["logits"] < 0.05
    assert step["onnxruntime_mismatches_not_near_ties"] == 0


def test_a_wrong_export_fails_the_parity_check(world, fp32_export, tmp_path):
    """Perturb one weight of step.onnx by 1 %: the check must say so and name the numbers."""
    import onnx
    from onnx import numpy_helper

    from ochre.export.onnx import build_graphs
    from ochre.models.lookup import load

    model = onnx.load(str(fp32_export / "step.onnx"))
    init = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
    onnx.save(model, str(tmp_path / "step.onnx"), save_as_external_data=True, location="step.onnx.data")
    tokenizer, dynamics, sampling = load(from_run(world), impl="torch")
    graphs = build_graphs(tokenizer, dynamics, sampling)
    report = parity.check_step(graphs["step"], graphs["step"], tmp_path / "step.onnx", "fp32", 1, steps=4)
    assert report["failures"] and "logits error" in report["failures"][0]


def test_export_writes_no_manifest_when_parity_fails(world, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "check_step", lambda *a, **k: {"failures": ["step: made up"]})
    with pytest.raises(ParityError, match="made up"):
        export_model(from_run(world), tmp_path, steps=2, log=lambda m: None)
    assert not (tmp_path / "manifest.json").exists() and (tmp_path / "parity_failed.json").is_file()


def test_near_ties():
    cfg = SamplingConfig(temperature=1.0, top_k=2)
    logits = torch.full((3, 8, 1, 1), -10.0, dtype=torch.float64)
    logits[0, :2, 0, 0] = torch.tensor([5.0, 0.0])          # clear order, u far from the CDF step
    logits[1, :2, 0, 0] = torch.tensor([5.0, 5.0 - 1e-7])   # the top two swap within tolerance
    logits[2, :2, 0, 0] = torch.tensor([0.0, 0.0])
    u = torch.tensor([0.5, 0.5, 0.5])[:, None, None]         # row 2: CDF step at exactly 0.5
    ties = parity.near_ties(logits, u, cfg, tol=1e-5)[:, 0, 0]
    assert ties.tolist() == [False, True, True]
    argmax = parity.near_ties(logits, u, SamplingConfig.argmax(), tol=1e-5)[:, 0, 0]
    assert argmax.tolist() == [False, True, True]


def test_cli_export_and_its_errors(world, tmp_path):
    r = subprocess.run([sys.executable, "-m", "ochre", "export", str(world), "--out", str(tmp_path / "b2"),
                        "--batch", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "b2" / "manifest.json").read_text())["batch"] == 2
    assert "parity passed" in r.stderr
    r = subprocess.run([sys.executable, "-m", "ochre", "export", str(tmp_path), "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "ochre export:" in r.stderr


def test_tensorrt_engines(fp32_export):
    pytest.importorskip("tensorrt", reason="TensorRT is not installable here "
                        "(docs/architecture.md#what-the-machines-give); the [tensorrt] extra")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU")
    from ochre.export.tensorrt import build_engines

    engines = build_engines(fp32_export, log=lambda m: None)
    assert all(p.stat().st_size > 0 for p in engines.values())


def test_graph_copies_compute_the_models_step():
    """The graphs' copy of a world model (per-player linear layers as Rows, in fp32 at every
    precision) keeps the state dict's names and computes the model's step; in bf16 the Rows stay fp32."""
    from ochre.models.dynamics import Dynamics, DynamicsConfig
    from ochre.models.precision import Rows, in_dtype

    torch.manual_seed(0)
    m = Dynamics(DynamicsConfig(codebook_size=64, embed_dim=8, hidden=(8, 12), head_dim=8, action_embed=8,
                                impl="torch")).eval()
    for p in m.parameters():                                   # FiLM starts at zero: make it count
        p.data.normal_(0, 0.3)
    (copy,) = in_dtype((m,), "fp32", traced=True)
    assert isinstance(copy.cells[0].film, Rows) and copy.state_dict().keys() == m.state_dict().keys()
    tokens, actions = torch.randint(0, 64, (3, 16, 16)), torch.rand(3, 4) * 2 - 1
    state = [torch.randn(3, *s) for s in m.state_shapes()]
    with torch.no_grad():
        (want, want_state), (got, got_state) = m.step(tokens, actions, state), copy.step(tokens, actions, state)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for a, b in zip(got_state, want_state):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        (low,) = in_dtype((m,), "bf16")
        assert low.cells[1].film.weight.dtype == torch.float32 and low.head[2].inner.weight.dtype == torch.bfloat16


def test_encode_parity_excuses_near_ties_only(world, fp32_export, monkeypatch):
    """A code that differs from eager torch's counts against the agreement unless, in fp64, the two
    codes are as near as twice eager torch's own distance error: ONNX Runtime answering with the
    second-nearest code everywhere fails; answering with eager torch's own codes passes."""
    from ochre.export.graph import EncodeGraph
    from ochre.models.lookup import load

    tok, _, _ = load(from_run(world), "cpu", impl="torch")
    graph = EncodeGraph(tok)

    def second_nearest(frames):
        x = graph.tokenizer.encoder(graph.tokenizer.normalize(frames.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)
        d = ((x[..., None, :] - graph.tokenizer.codebook) ** 2).sum(-1)
        return [d.topk(2, dim=-1, largest=False).indices[..., 1]]

    with torch.no_grad():
        monkeypatch.setattr(parity, "_Ort", lambda path, device="cpu": lambda frames: [graph(frames)])
        same = parity.check_encode(graph, fp32_export / "encode.onnx", "fp32", 1)
        monkeypatch.setattr(parity, "_Ort", lambda path, device="cpu": second_nearest)
        wrong = parity.check_encode(graph, fp32_export / "encode.onnx", "fp32", 1)
    assert same["agreement"] == 1.0 and same["near_ties"] == 0 and not same["failures"]
    assert wrong["agreement"] < 0.5 and wrong["near_ties"] < 0.01 * wrong["positions"] and wrong["failures"]


def test_a_model_with_a_learned_pointer_exports_with_parity(tmp_path):
    """A learned pointer (9 proposals per position, with weights that choose: tests/live_model.py) exports
    and passes the same 64-step parity check: the factor sampler's compiled branch marks every proposal."""
    from live_model import make_model

    world = make_model(tmp_path / "model", pointer=1)
    export_model(from_run(world), tmp_path / "onnx", dtype="fp32", batch=1, log=lambda m: None)
    m = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    step = m["parity"]["step"]
    assert m["parity"]["passed"] and step["onnxruntime_mismatches_not_near_ties"] == 0
    assert step["ort_error"]["logits"] <= step["tolerance"]["logits"] < 1e-4


def test_a_guided_step_exports_with_parity(world, tmp_path):
    """Action guidance bakes a doubled batch and the boost added after guiding (ochre.models.step._guided) into
    the step graph; it passes the same 64-step parity check as the plain step."""
    export_model(from_run(world), tmp_path / "onnx", dtype="fp32", batch=1, guidance=1.5, log=lambda m: None)
    m = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    step = m["parity"]["step"]
    assert m["sampling"]["guidance"] == 1.5
    assert m["parity"]["passed"] and step["onnxruntime_mismatches_not_near_ties"] == 0
    assert step["ort_error"]["logits"] <= step["tolerance"]["logits"] < 1e-4
