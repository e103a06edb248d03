"""Native deploy (docs/native.md): AOTInductor export and its parity with eager torch, the `native`
runtime backend (the torch backend's frames for the same seed, buffers that stay put, the action
guard, its rows in `ochre bench` and `ochre play`), and the Triton kernels compiled ahead of time.
The C++ loop itself is tested by ctest (CMakeLists.txt), which `.ci/run` builds and runs."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from live_model import check_player_reset, make_model

from ochre.models.lookup import from_run
from ochre.runtime.stepper import make_stepper

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(live_world):
    return live_world


@pytest.fixture(scope="module")
def packages(aoti_b1):
    return aoti_b1


def _play(stepper, context, actions) -> np.ndarray:
    return np.stack([stepper.reset(context).copy()] + [stepper.step(a).copy() for a in actions])


def test_aoti_export_is_checked_and_its_manifest_read(packages, tmp_path):
    from ochre.export.aoti import read_manifest

    assert {f.name for f in packages.iterdir()} >= {"encode.pt2", "step.pt2", "decode.pt2", "shapes.txt",
                                                     "context.npy", "manifest.json"}
    m = read_manifest(packages)
    p = m["parity"]
    assert p["steps"] == 6 and p["step"]["bad"] == 0 and p["encode"]["bad"] == 0 and p["max_abs_err"]["frames"] <= 1
    assert m["batch"] == 1 and m["fps"] == 8.0 and set(m["sources"]) == {"tokenizer", "world"}
    with pytest.raises(FileNotFoundError, match="ochre export CKPT --format aoti"):
        read_manifest(tmp_path)
    shutil.copytree(packages, tmp_path / "other")
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({**m, "torch": "1.0"}))
    with pytest.raises(ValueError, match="compiled by torch 1.0.*re-export"):
        read_manifest(tmp_path / "other")


def test_native_dreams_the_torch_backends_frames(world, packages):
    """Same seed, same actions: every backend draws the same noise, so the native packages sample
    the same tokens as eager torch (near-ties aside) and their frames differ only where a decoder
    rounds x·255 at .5 the other way."""
    model = from_run(world)
    context = model.context_frames()[:1]
    actions = np.random.default_rng(0).uniform(-1, 1, (24, 1, 4)).astype(np.float32)
    eager = _play(make_stepper("torch", model, seed=5), context, actions)
    native = _play(make_stepper("native", aoti_dir=packages, seed=5), context, actions)
    diff = np.abs(eager.astype(int) - native.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    other = _play(make_stepper("native", aoti_dir=packages, seed=6), context, actions)
    assert not np.array_equal(other, native)                  # the seed is the noise, not a constant


def test_native_stepper_keeps_its_buffers_and_guards_actions(packages):
    said = []
    stepper = make_stepper("native", aoti_dir=packages, seed=3, report=said.append)
    context = np.load(packages / "context.npy")
    ptrs = [t.data_ptr() for t in (stepper.tokens, *stepper.state)]
    frames = stepper.reset(context)
    for bad in ([[np.nan, 0, 0, 0]], [[9, 0, 0, 0]], np.zeros(3), [0.5, 0, 0, 1]):
        assert stepper.step(bad) is frames                        # the same host buffer every step
    assert ptrs == [t.data_ptr() for t in (stepper.tokens, *stepper.state)]
    assert stepper.actions_guard.issues == {"shape": 1, "not_a_number": 0, "nan": 1, "out_of_range": 1}
    assert len(said) == 3
    actions = np.random.default_rng(0).uniform(-1, 1, (10, 4)).astype(np.float32)
    stepper.seed(3)
    frames, tokens = stepper.rollout(context, actions)
    assert frames.shape == (11, 1, 64, 64, 3) and frames.dtype == np.uint8 and tokens.shape == (11, 1, 16, 16)
    stepper.seed(3)
    again, _ = stepper.rollout(context, actions)
    np.testing.assert_array_equal(frames, again)
    with pytest.raises(ValueError, match="context frames must be uint8"):
        stepper.reset(context[..., :2])
    with pytest.raises(ValueError, match="compiled with guidance 1.0"):
        make_stepper("native", aoti_dir=packages, guidance=2.0)
    with pytest.raises(ValueError, match="exported for batch 1, not 2"):
        make_stepper("native", aoti_dir=packages, batch=2)


@pytest.mark.slow
def test_one_native_players_reset_leaves_the_others_dreams_alone(world, tmp_path_factory):
    """`ochre serve` restarts one player of a batch while the others play on: at batch 2 (a second
    export, about 35 s), the packages' static-batch encoder and decoder serve one row."""
    from ochre.runtime.exports import ensure_aoti

    b2 = ensure_aoti(from_run(world), batch=2, out=tmp_path_factory.mktemp("aoti") / "b2", check_steps=2,
                     log=lambda m: None)
    actions = np.random.default_rng(1).uniform(-1, 1, (6, 2, 4)).astype(np.float32)
    check_player_reset(lambda: make_stepper("native", aoti_dir=b2, batch=2, seed=4),
                       from_run(world).context_frames()[:2], actions)


def test_native_rollout_replays_in_eager_torch(world, packages):
    """Teacher-forced on the packages' own tokens with the same noise, eager torch samples the same
    tokens except counted near-ties, and the frames lie within 1 level of the fp64 decode; frames
    moved by 3 levels are refused (eager fp32 lies within 1 of fp64, so the bound is at most 2)."""
    from ochre.export.aoti import exact_decode, replay_eager
    from ochre.export.graph import DecodeGraph, StepGraph
    from ochre.export.parity import ParityError
    from ochre.models.checkpoint import load_dynamics, load_tokenizer

    model = from_run(world)
    stepper = make_stepper("native", aoti_dir=packages, seed=3)
    actions = np.random.default_rng(1).uniform(-1, 1, (10, 4)).astype(np.float32)
    frames, tokens = stepper.rollout(np.load(packages / "context.npy"), actions)
    dynamics, sampling, _ = load_dynamics(model.world, impl="torch")
    gen = torch.Generator().manual_seed(3)
    noise = torch.stack([torch.rand(1, 16, 16, generator=gen) for _ in actions])
    tok = load_tokenizer(model.tokenizer)
    report = replay_eager(StepGraph(dynamics, sampling), DecodeGraph(tok), exact_decode(tok),
                          tokens, frames, torch.from_numpy(actions)[:, None], noise)
    assert report["step"]["bad"] == 0 and report["max_abs_err"]["frames"] <= 1
    assert report["max_abs_err"]["frames_torch"] <= 1 and report["tolerance"]["frames"] <= 2
    off = frames.copy()
    off[4, 0, 10, 20] = np.where(off[4, 0, 10, 20] > 127, off[4, 0, 10, 20] - 3, off[4, 0, 10, 20] + 3)
    with pytest.raises(ParityError, match="fp64 decode"):
        replay_eager(StepGraph(dynamics, sampling), DecodeGraph(tok), exact_decode(tok), tokens, off,
                     torch.from_numpy(actions)[:, None], noise)


def test_bench_and_play_run_native(world, packages, tmp_path):
    """`ochre bench` has a native row beside torch; `ochre play --backend native` plays headless."""
    from ochre.runtime.bench import export_folders, run_bench

    model = from_run(world)
    result = run_bench(model, backends=["torch", "native"], batches=[1], runs=6, warmup=2, rounds=2,
                       folders=export_folders(model, aoti=[packages]), log=lambda m: None)
    rows = {r["backend"]: r for r in result["rows"]}
    assert set(rows) == {"torch", "native"} and rows["native"]["fps"] > 0 and rows["native"]["runs"] == 6
    assert rows["native"]["speedup_vs_torch"] == pytest.approx(rows["native"]["fps"] / rows["torch"]["fps"])
    actions = tmp_path / "actions.txt"
    actions.write_text("1 0 0 0\n0 0 0 1\n" * 3)
    r = subprocess.run([sys.executable, "-m", "ochre", "play", "--headless", "--checkpoint", str(world), "--backend",
                        "native", "--aoti", str(packages), "--actions", str(actions), "--stats",
                        str(tmp_path / "play.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((tmp_path / "play.json").read_text())
    assert stats["backend"] == "native" and stats["steps"] == 6 and stats["step_ms_p50"] > 0
    r = subprocess.run([sys.executable, "-m", "ochre", "bench", "--checkpoint", str(world), "--backends", "native",
                        "--aoti", str(packages), "--batch", "1", "--runs", "4", "--warmup", "1", "--out",
                        str(tmp_path / "bench.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| native | 1 |" in r.stdout
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["backend"] == "native"


def test_bf16_packages_pass_their_parity_and_bench_beside_fp32(world, packages, tmp_path_factory):
    """`--dtype bf16`: the step's and decoder's convolutions in bf16 (the encoder stays fp32), checked
    against eager torch at the same precision within the bf16 bounds; a stepper asked for another
    precision than the folder's is refused; `ochre bench --dtypes fp32 bf16` times both, labelled."""
    from ochre.export.aoti import TOLERANCE, frames_bound, read_manifest
    from ochre.models.precision import LowPrecision
    from ochre.runtime.bench import export_folders, label, run_bench, table
    from ochre.runtime.exports import ensure_aoti

    model = from_run(world)
    low = ensure_aoti(model, batch=1, out=tmp_path_factory.mktemp("aoti") / "b1-bf16", check_steps=6, dtype="bf16",
                      log=lambda m: None)
    m = read_manifest(low)
    p = m["parity"]
    assert m["dtype"] == "bf16" and p["step"]["bad"] == 0 and p["tolerance"]["state"] == TOLERANCE["bf16"]["state"]
    assert p["max_abs_err"]["frames"] <= p["tolerance"]["frames"] == frames_bound(p["max_abs_err"]["frames_torch"])
    assert m["parity"]["max_abs_err"]["state"] <= TOLERANCE["bf16"]["state"]
    assert make_stepper("native", aoti_dir=low).dtype == "bf16"
    with pytest.raises(ValueError, match="exported in bf16, not fp32"):
        make_stepper("native", aoti_dir=low, dtype="fp32")
    compiled = make_stepper("torch", model, dtype="bf16")
    assert compiled.dtype == "bf16" and isinstance(compiled.dynamics.head[2], LowPrecision)
    assert compiled.dynamics.head[2].inner.weight.dtype == torch.bfloat16 and compiled.tokens.dtype == torch.long
    result = run_bench(model, backends=["torch", "native"], batches=[1], runs=4, warmup=1, rounds=1,
                       dtypes=["fp32", "bf16"], folders=export_folders(model, aoti=[packages, low]),
                       log=lambda m: None)
    rows = {label(r): r for r in result["rows"]}
    assert set(rows) == {"torch", "native", "native bf16"} and rows["native bf16"]["dtype"] == "bf16"
    assert rows["native bf16"]["speedup_vs_torch"] == pytest.approx(rows["native bf16"]["fps"] / rows["torch"]["fps"])
    assert "| native bf16 | 1 |" in table(result)


def test_export_folders_of_another_model_are_refused(packages, tmp_path):
    from ochre.runtime.bench import export_folders

    other = from_run(make_model(tmp_path / "other", seed=1))
    with pytest.raises(ValueError, match="exported from another world model"):
        export_folders(other, aoti=[packages])


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton's compiler")
def test_triton_kernels_compile_ahead_of_time_for_sm90(tmp_path):
    """Compile-only evidence for the CUDA targets: the nearest-code search and the FiLM-GRU step
    become C launchers with sm_90 cubins embedded (no GPU needed), which compile as C where the
    CUDA headers are present; the reference values the C++ test checks are written beside them."""
    script = ROOT / "native" / "cuda" / "aot_compile.py"
    r = subprocess.run([sys.executable, str(script), str(tmp_path), "--arch", "90"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("nearest_code_f32", "film_gru_fwd_f32"):
        spec = (tmp_path / "gen" / f"{name}_spec.c").read_text()
        assert "cuLaunchKernel" in spec and "unsigned char" in spec             # launcher + embedded cubin
        # triton's linker spells the types CUresult/CUstream or through its TT_ResultTy/TT_StreamTy typedefs
        header = (tmp_path / f"{name}.h").read_text()
        assert re.search(rf"(CUresult|TT_ResultTy) {name}_default\((CUstream|TT_StreamTy) stream", header), header
    assert np.load(tmp_path / "ref" / "idx.npy").shape == (1000,)
    cuda_h = [p for p in (Path("/usr/local/cuda/include"), Path("/usr/include")) if (p / "cuda.h").is_file()]
    if not cuda_h or shutil.which("cc") is None:
        pytest.skip("no cuda.h or C compiler here: the cubins were built, the launchers not compiled")
    for c in [*tmp_path.glob("*.c"), *(tmp_path / "gen").glob("*.c")]:
        r = subprocess.run(["cc", "-fsyntax-only", f"-I{cuda_h[0]}", f"-I{tmp_path}", str(c)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]


def test_cuda_packages_are_named_in_their_folder_and_refused_without_a_gpu(world, packages, tmp_path):
    """`ochre export --format aoti --device cuda` compiles on the GPU it runs on; its folder says so
    (manifest `device`, `cuda_arch`; a `device cuda` line in shapes.txt for ochre-native) and is
    refused in one line on a machine without that GPU. CPU folders keep their old layout."""
    from ochre.export import aoti
    from ochre.runtime.bench import available_backends
    from ochre.runtime.exports import aoti_dir

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: these are the refusals of a machine without one")
    lines = (packages / "shapes.txt").read_text().splitlines()
    assert not [ln for ln in lines if ln.startswith("device")] and aoti.read_manifest(packages)["device"] == "cpu"
    with pytest.raises(ValueError, match="--device cuda, but torch sees no CUDA GPU"):
        aoti.export_aoti(from_run(world), tmp_path / "cuda", device="cuda")
    with pytest.raises(ValueError, match="not 'tpu'"):
        aoti.compiled_for("tpu")
    with pytest.raises(ValueError, match=r"compiled for cpu, not cuda; `ochre export .* --device cuda`"):
        make_stepper("native", aoti_dir=packages, device="cuda")
    relabelled = tmp_path / "relabelled"
    shutil.copytree(packages, relabelled)
    m = json.loads((relabelled / "manifest.json").read_text())
    m.update(device="cuda", cuda_arch="sm_90", gpu="NVIDIA H100 80GB HBM3")
    (relabelled / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match=r"compiled for CUDA \(NVIDIA H100 80GB HBM3, sm_90\).*no CUDA GPU here"):
        aoti.read_manifest(relabelled)
    assert "native" in available_backends("cuda")
    assert "-cpu-" in aoti_dir(from_run(world), 1).name


def test_cached_exports_are_keyed_by_the_code_of_their_graphs(world, tmp_path, monkeypatch):
    """An export cached by another version of the graphs' code (the sampler, the model) is not reused."""
    from types import SimpleNamespace

    import ochre.runtime.exports as ex
    from ochre.models.lookup import from_run

    model, code = from_run(world), ex.graph_code()
    assert ex.aoti_dir(model, 1).name.endswith(f"-code{code}") and ex.export_dir(model, 1).name.endswith(f"-code{code}")
    changed = tmp_path / "sampling.py"
    changed.write_bytes(Path(importlib.util.find_spec("ochre.models.sampling").origin).read_bytes() + b"# changed\n")
    real = importlib.util.find_spec
    fake = {"ochre.models.sampling": SimpleNamespace(origin=str(changed))}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake.get(name) or real(name))
    assert ex.graph_code.__wrapped__() != code


def test_cuda_packages_say_their_device_to_the_cpp_loop(world, tmp_path):
    from ochre.export.aoti import _write_shapes
    from ochre.export.graph import StepGraph
    from ochre.models.checkpoint import load_dynamics

    dynamics, sampling, _ = load_dynamics(from_run(world).world, impl="torch")
    for device in ("cpu", "cuda"):
        (tmp_path / device).mkdir()
        _write_shapes(tmp_path / device, StepGraph(dynamics, sampling), 2, device)
    said = {d: [ln for ln in (tmp_path / d / "shapes.txt").read_text().splitlines() if ln.startswith("device")]
            for d in ("cpu", "cuda")}
    assert said == {"cpu": [], "cuda": ["device cuda"]}
