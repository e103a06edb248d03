"""The live stepper (docs/runtime.md): backends agree, players are independent, buffers stay put, bad
actions never stop the loop; live input encodes like `ochre prepare`; which model plays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from live_model import check_player_reset, make_model

from ochre.actions import encode_window_actions
from ochre.models.lookup import from_run, resolve
from ochre.runtime.actions import ActionGuard, LiveInput, read_action_file
from ochre.runtime.stepper import make_stepper


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def onnx_b2(world, tmp_path_factory):
    from ochre.export.cli import export_model

    out = tmp_path_factory.mktemp("onnx")
    export_model(from_run(world), out, batch=2, steps=8, log=lambda m: None)
    return out


def _actions(steps: int, batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (steps, batch, 4)).astype(np.float32)


def _play(stepper, context, actions) -> np.ndarray:
    frames = [stepper.reset(context).copy()]
    frames += [stepper.step(a).copy() for a in actions]
    return np.stack(frames)                                            # (S+1, B, H, W, 3)


def test_torch_and_onnxruntime_dream_the_same_frames(world, onnx_b2):
    """Same seed, same actions: the same noise, so the same tokens except at near-ties (two fp32
    compilations round ~1e-6 apart, and the whole-distribution draw of a random-weight model sits
    that close to a CDF step now and then; export/ties.py), and frames that differ only where the
    decoders round a pixel differently (x·255 at .5). Where a near-tie flips, the ONNX side is set
    back to the torch side's tokens, so every step stays comparable."""
    import torch

    from ochre.export.ties import TIE_TOL, sampling_margin
    from ochre.models.step import live_step

    model = from_run(world)
    a = make_stepper("torch", model, batch=2, seed=5)
    b = make_stepper("onnxruntime", onnx_dir=onnx_b2, batch=2, seed=5)

    def same_frames(fa, fb):
        diff = np.abs(fa.astype(int) - fb.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3

    context = model.context_frames()[:2]
    same_frames(a.reset(context), b.reset(context))
    flips = compared = 0
    for act in _actions(24, 2):
        tokens, state = a.tokens.clone(), [s.clone() for s in a.state]
        fa, fb = a.step(act).copy(), b.step(act).copy()
        assert np.array_equal(a.noise, b.noise)
        ta, tb = a.tokens.numpy(), b._tokens[b._cur][0]
        differ = ta != tb
        if differ.any():
            with torch.inference_mode():
                _, logits, _ = live_step(a.dynamics, tokens, torch.from_numpy(act), torch.from_numpy(a.noise), state,
                                         a.sampling, logits=True)
            margin = sampling_margin(logits.movedim(-1, 1), torch.from_numpy(a.noise), a.sampling).numpy()
            assert (margin[differ] < TIE_TOL).all(), f"tokens differ away from a near-tie: {margin[differ]}"
            flips += int(differ.sum())
            tb[...] = ta
        else:
            same_frames(fa, fb)
            compared += 1
    assert flips <= 0.01 * 24 * ta.size and compared >= 12, (flips, compared)


def test_players_are_independent(world):
    model = from_run(world)
    context = model.context_frames()[:3]
    acts = _actions(8, 3)
    base = _play(make_stepper("torch", model, batch=3, seed=1), context, acts)
    changed = acts.copy()
    changed[:, 2] = -changed[:, 2]
    other = _play(make_stepper("torch", model, batch=3, seed=1), context, changed)
    assert np.array_equal(base[:, :2], other[:, :2]) and not np.array_equal(base[:, 2], other[:, 2])


def test_one_players_reset_leaves_the_others_dreams_alone(world, onnx_b2):
    """A server restarts one player while the others play on (torch; compiled shares its reset path)."""
    model = from_run(world)
    check_player_reset(lambda: make_stepper("torch", model, batch=3, seed=4), model.context_frames()[:3],
                       _actions(6, 3))
    check_player_reset(lambda: make_stepper("onnxruntime", onnx_dir=onnx_b2, batch=2, seed=4),
                       model.context_frames()[:2], _actions(6, 2), player=0)
    s = make_stepper("torch", model, batch=3)
    for bad in (3, -1, 1.0, True, [], [1, 1]):
        with pytest.raises(ValueError, match="an index in 0..2"):
            s.reset_player(bad, model.context_frames()[0])
    with pytest.raises(ValueError, match=r"uint8 \(64, 64, 3\)"):
        s.reset_player(0, model.context_frames()[:1])
    with pytest.raises(ValueError, match=r"uint8 \(2, 64, 64, 3\)"):
        s.reset_player([0, 2], model.context_frames()[:3])
    # Two players at once are the same restarts as one after the other.
    contexts = model.context_frames()
    one = make_stepper("torch", model, batch=3, seed=4)
    one.reset(contexts[:3])
    one.reset_player(0, contexts[5])
    one.reset_player(2, contexts[4])
    s.reset(contexts[:3])
    np.testing.assert_array_equal(s.reset_player([0, 2], contexts[[5, 4]]), one.frames)


def test_state_lives_in_preallocated_buffers(world, onnx_b2):
    torch_stepper = make_stepper("torch", from_run(world), batch=2)
    ort_stepper = make_stepper("onnxruntime", onnx_dir=onnx_b2, batch=2)
    context = from_run(world).context_frames()[:2]
    for s in (torch_stepper, ort_stepper):
        s.reset(context)
    ptrs = [b.data_ptr() for b in (torch_stepper.tokens, *torch_stepper.state)]
    frames = (torch_stepper.frames, ort_stepper.frames)
    for a in _actions(3, 2):
        assert torch_stepper.step(a) is frames[0] and ort_stepper.step(a) is frames[1]
    assert ptrs == [b.data_ptr() for b in (torch_stepper.tokens, *torch_stepper.state)]


def test_bad_actions_are_fixed_and_said_once(world):
    said = []
    s = make_stepper("torch", from_run(world), batch=2, report=said.append)
    s.reset(from_run(world).context_frames()[:2])
    for bad in ([[np.nan, 0, 0, 0], [0, 0, 1, 0]], [[0, 0, 0, 0], [9, -9, 0, 0]], np.zeros(3), "w", None,
                [[np.inf, 0, 0, 0], [0, 0, 0, 0]]):
        frames = s.step(bad)
        assert frames.shape == (2, 64, 64, 3)
    assert s.actions_guard.issues == {"shape": 2, "not_a_number": 1, "nan": 2, "out_of_range": 1}   # None: shape ()
    assert len(said) == 4 and any("clamped" in m for m in said) and any("shape (2, 4)" in m for m in said)


def test_action_guard_keeps_good_players():
    g = ActionGuard(2, report=lambda m: None)
    out = g(np.array([[np.nan, 0.5, 2.0, 0], [0.25, -0.5, 1, -1]], np.float32))
    assert out.tolist() == [[0, 0.5, 1.0, 0], [0.25, -0.5, 1, -1]]


def test_live_input_is_prepare_encoding():
    """Mouse counts -> degrees (0.15° per count) -> camera summed over the window, keys averaged."""
    live = LiveInput()
    ticks = [(40, -20, {"w"}), (40, 0, {"w", "d"}), (0, 0, set()), (20, 0, {"a"})]
    for dx, dy, keys in ticks:
        live.tick(0.05, dx, dy, keys)
    got = live.action()
    camera = np.array([[dy * 0.15, dx * 0.15] for dx, dy, _ in ticks])
    move_x = np.array([("d" in k) - ("a" in k) for *_, k in ticks], float)
    move_z = np.array([("w" in k) - ("s" in k) for *_, k in ticks], float)
    want = encode_window_actions(camera, move_x, move_z, np.array([0, 4]))[0]
    assert np.allclose(got, want) and np.allclose(got, [15 / 15, -3 / 15, 0, 0.5])
    assert live.action().tolist() == [0, 0, 0, 0]                 # a new window starts empty
    live.tick(0.5, keys={"right"})                               # arrows: 90°/s
    assert np.isclose(live.action()[0], 1.0)                     # 45° clipped to 15°


def test_action_file(tmp_path):
    """The action-file format of docs/data.md#action-files, the one reader (ochre-native's C++ reader
    follows the same rules)."""
    p = tmp_path / "a.txt"
    p.write_text("# yaw pitch move_x move_z\n1 0 0 0\n\n0.5, -0.5, 1, 0  # turn\n0.25,0.1,-1,0\n")
    np.testing.assert_array_equal(read_action_file(p), np.array([[1, 0, 0, 0], [0.5, -0.5, 1, 0], [0.25, 0.1, -1, 0]],
                                                                np.float32))
    p.write_text("1 0 0\n")
    with pytest.raises(ValueError, match="a.txt:1: need 4 numbers"):
        read_action_file(p)
    p.write_text("0 0 0 0\n1 0 x 0\n")
    with pytest.raises(ValueError, match="a.txt:2: not numbers"):
        read_action_file(p)
    p.write_text("# nothing\n\n")
    with pytest.raises(ValueError, match="a.txt: no actions"):
        read_action_file(p)


def test_one_action_row_drives_every_player():
    g = ActionGuard(3, report=lambda m: None)
    assert g(np.array([0.5, 0, 2.0, 0], np.float32)).tolist() == [[0.5, 0, 1, 0]] * 3
    assert g.issues["shape"] == 0 and g.issues["out_of_range"] == 1


def test_cli_offers_every_backend():
    """One list of backends: the stepper's is the CLI's (ochre.choices), for play and bench alike."""
    from ochre.cli import build_parser
    from ochre.runtime.stepper import BACKENDS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in ("play", "bench"):
        flag = next(a for a in sub[command]._actions if a.dest in ("backend", "backends"))
        assert tuple(flag.choices) == BACKENDS


def test_model_resolution_order(world, tmp_path, monkeypatch):
    """Explicit run -> newest `ochre demo` -> the shipped model, and each says which it is."""
    from ochre.models import lookup as m

    monkeypatch.setenv("OCHRE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert "checkpoint" in resolve(world).origin
    if (m.SHIPPED / "MODEL.json").is_file():
        assert "shipped" in resolve().origin
    m.remember_demo(world.parent)
    picked = resolve()
    assert "ochre demo" in picked.origin and picked.world.parent.parent == world
    assert json.loads((tmp_path / "cache" / "last_demo.json").read_text())["out"] == str(world.parent.resolve())


def test_an_explicit_tokenizer_must_make_the_codes_the_run_was_trained_on(world, tmp_path):
    """--tokenizer for a run: a decoder refined from the run's tokenizer plays; one with other codes is refused,
    naming both (the world model would read codes it never learned)."""
    import torch

    from ochre.models.checkpoint import load_tokenizer
    from ochre.models.lookup import ModelError
    from ochre.models.tokenizer import Tokenizer, TokenizerConfig, grow_decoder
    from ochre.train.checkpoint import save_checkpoint

    base = load_tokenizer(from_run(world).tokenizer)
    refined = Tokenizer(TokenizerConfig(**{**vars(base.config), "decoder_blocks": (1, 1, 2)}))
    grow_decoder(refined, base)
    ref = save_checkpoint(tmp_path / "refined", 1, refined)
    assert from_run(world, ref).tokenizer.resolve() == ref.resolve()
    torch.manual_seed(5)
    other = save_checkpoint(tmp_path / "other", 1, Tokenizer(base.config))
    with pytest.raises(ModelError, match="makes other codes than .* pass that tokenizer or a decoder refined"):
        from_run(world, other)


def test_a_shipped_models_world_folder_names_its_own_tokenizer(tmp_path):
    """A shipped model's folder (or a copy) holds no token shards: naming its world/ takes its tokenizer/,
    frame rate and context frames, as the shipped model does; without MODEL.json it is a run like any other,
    and the error says to pass --tokenizer."""
    import shutil

    from ochre.models import lookup as m
    from ochre.models.lookup import ModelError

    if not (m.SHIPPED / "MODEL.json").is_file():
        pytest.skip("this install has no shipped model")
    copy = tmp_path / "shipped"
    shutil.copytree(m.SHIPPED, copy)
    got, ref = from_run(copy / "world"), m.shipped(copy)
    assert got.tokenizer == ref.tokenizer == copy / "tokenizer" and got.fps == ref.fps
    assert got.contexts == copy / "contexts.npy" and got.info == ref.info and got.info["fps"] == got.fps
    (copy / "MODEL.json").unlink()
    with pytest.raises(ModelError, match="cannot find the tokenizer .*Pass --tokenizer"):
        from_run(copy / "world")


@pytest.mark.slow
def test_compiled_backend_matches_eager(world):
    """torch.compile takes about a minute on 2 CPU cores."""
    model = from_run(world)
    context = model.context_frames()[:1]
    acts = _actions(4, 1)
    a = _play(make_stepper("torch", model, seed=2), context, acts)
    b = _play(make_stepper("compiled", model, seed=2), context, acts)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_a_backend_that_raises_is_its_error_row_and_every_other_row_is_written(live_world, onnx_b1, aoti_b1,
                                                                              monkeypatch):
    """`ochre bench` with one backend failing while prepared, one in its first steps (where compiles,
    CUDA-graph capture and the first ONNX Runtime runs happen) and one while timed, each with a plain
    Exception subclass (ONNX Runtime's errors are not RuntimeError): an error row each, saying when,
    and the torch row timed; every row reaches `emit` as it is final."""
    import ochre.runtime.bench as bench

    class NotARuntimeError(Exception):
        pass

    def breaks_after(n: int, message: str):
        calls = []

        def step(actions, noise):
            calls.append(1)
            if len(calls) > n:
                raise NotARuntimeError(message)
        return step

    real = bench._stepper

    def flaky(backend, *args, **kwargs):
        if backend == "compiled":
            raise NotARuntimeError("no compiler here")
        stepper = real(backend, *args, **kwargs)
        if backend == "onnxruntime":
            stepper._step = breaks_after(0, "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : first run")
        if backend == "native":
            stepper._step = breaks_after(3, "lost the device")      # warm-up (1) and two timed steps
        return stepper
    monkeypatch.setattr(bench, "_stepper", flaky)
    model = from_run(live_world)
    seen = []
    result = bench.run_bench(model, backends=["torch", "compiled", "onnxruntime", "native"], batches=[1], runs=6,
                             warmup=1, rounds=2, folders=bench.export_folders(model, onnx=[onnx_b1], aoti=[aoti_b1]),
                             log=lambda m: None, emit=seen.append)
    rows = {r["backend"]: r for r in result["rows"]}
    assert set(rows) == {"torch", "compiled", "onnxruntime", "native"} and seen == result["rows"]
    assert rows["torch"]["runs"] == 6 and rows["torch"]["fps"] > 0 and rows["torch"]["runs_on"] == "cpu"
    assert rows["compiled"]["failed"] == "preparing"
    assert rows["compiled"]["error"] == "NotARuntimeError: no compiler here"
    assert rows["onnxruntime"]["failed"] == "first steps"
    assert rows["onnxruntime"]["error"] == "NotARuntimeError: [ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : first run"
    assert (rows["native"]["failed"], rows["native"]["error"]) == ("timing", "NotARuntimeError: lost the device")
    assert "| compiled | 1 | — |" in bench.table(result)
    assert result["model"] == f"checkpoint {live_world.name}"       # results name no path of this machine


def test_a_models_label_names_no_path_of_this_machine(tmp_path):
    """Results files record `Model.label`: the origin with absolute paths cut to their last folder."""
    from ochre.models.lookup import Model

    run = tmp_path / "runs" / "world"
    assert Model(run, run, 8.0, f"checkpoint {run}").label == "checkpoint world"
    assert Model(run, run, 8.0, f"the newest `ochre demo` model ({tmp_path / 'demo-out'})").label \
        == "the newest `ochre demo` model (demo-out)"
    assert Model(run, run, 8.0, "checkpoint runs/world").label == "checkpoint runs/world"
    assert str(tmp_path) not in Model(run, run, 8.0, f"the export {tmp_path}/onnx").label


def test_a_world_model_trained_on_the_shipped_codes_replaces_the_shipped_one(tmp_path):
    """ship --world: a run whose tokens the shipped tokenizer's codes made replaces world/ and metrics.json,
    MODEL.json says by which command; a run on other codes, or metrics of another model, is refused and
    nothing changes."""
    import shutil

    import torch

    from ochre.models.checkpoint import checkpoint_hash, latest_checkpoint, load_dynamics, sha256
    from ochre.train.checkpoint import save_checkpoint
    from runtime.ship import main as ship_main
    from runtime.ship import ship_world

    base, other = make_model(tmp_path / "a", seed=0), make_model(tmp_path / "b", seed=1)   # b: other codes
    trained = make_model(tmp_path / "c", seed=0)             # a's tokenizer and world, then trained on
    model, _, meta = load_dynamics(trained)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    extra = meta["extra"]
    extra["run"]["inputs"]["init"] = sha256(latest_checkpoint(base) / "model.safetensors")   # `--init` from base
    save_checkpoint(trained, 2, model, extra=extra)
    shipped = tmp_path / "shipped"
    shutil.copytree(latest_checkpoint(base), shipped / "world")
    shutil.copytree(latest_checkpoint(base.parent / "tokenizer"), shipped / "tokenizer")
    (shipped / "MODEL.json").write_text(json.dumps({"made_by": "ochre demo", "world_step": 1000}))
    (shipped / "metrics.json").write_text(json.dumps({"world_hash": checkpoint_hash(base)}))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"world_hash": checkpoint_hash(trained), "psnr@8": 14.0}))
    before = checkpoint_hash(shipped / "world")

    with pytest.raises(ValueError, match="codes the shipped tokenizer does not make"):
        ship_world(other, "cmd", good, shipped)
    with pytest.raises(ValueError, match="is the eval of world model"):
        ship_world(trained, "cmd", shipped / "metrics.json", shipped)
    with pytest.raises(SystemExit):
        ship_main(["--world", str(trained), "--command", "cmd", "--dest", str(shipped)])   # no --metrics
    assert checkpoint_hash(shipped / "world") == before
    info = ship_world(trained, "ochre train TOKENS --init ochre/shipped/world --steps 300", good, shipped)
    assert checkpoint_hash(shipped / "world") == checkpoint_hash(trained) != before
    assert json.loads((shipped / "metrics.json").read_text())["psnr@8"] == 14.0
    assert info["made_by"] == "ochre demo" and info["world_made_by"].startswith("ochre train")
    assert info["world_step"] == 1002                        # the shipped model's steps, then the run's
    assert json.loads((shipped / "MODEL.json").read_text()) == info and not list(shipped.glob("*.tmp"))


def test_the_decoding_an_eval_of_the_shipped_model_read_ships_with_it(tmp_path):
    """ship --decoding: the eval's decoding (guidance among it) becomes the shipped world model's, its metrics
    the shipped ones, and the weights stay; an eval of another model, or one that does not say its decoding,
    is refused and nothing changes."""
    import shutil

    from ochre.models.checkpoint import checkpoint_hash, latest_checkpoint, load_dynamics, motion_prior_of
    from runtime.ship import main as ship_main
    from runtime.ship import ship_decoding

    base, other = make_model(tmp_path / "a", seed=0), make_model(tmp_path / "b", seed=1)
    shipped = tmp_path / "shipped"
    shutil.copytree(latest_checkpoint(base), shipped / "world")
    (shipped / "MODEL.json").write_text(json.dumps({"made_by": "ochre demo", "world_step": 1000}))
    (shipped / "metrics.json").write_text(json.dumps({"world_hash": checkpoint_hash(base), "psnr@8": 13.0}))
    _, before, _ = load_dynamics(shipped / "world")
    weights = checkpoint_hash(shipped / "world")
    decoding = {"temperature": 1.0, "top_k": 2048, "guidance": 1.5, "copy_boost": 15.0, "fill_boost": 5.5,
                "walk_boost": 0.5, "min_p": 0.0}
    good, foreign, silent = tmp_path / "good.json", tmp_path / "foreign.json", tmp_path / "silent.json"
    good.write_text(json.dumps({"world_hash": weights, "psnr@8": 14.0, **decoding,
                                "motion_prior": load_dynamics(shipped / "world")[0].config.motion_prior()}))
    foreign.write_text(json.dumps({"world_hash": checkpoint_hash(other), **decoding}))
    silent.write_text(json.dumps({"world_hash": weights, "psnr@8": 14.0}))

    with pytest.raises(ValueError, match="not of the shipped one"):
        ship_decoding(foreign, "cmd", shipped)
    with pytest.raises(ValueError, match="does not say which decoding"):
        ship_decoding(silent, "cmd", shipped)
    # The same weights read with another motion prior are another model: the hash alone cannot tell.
    prior = motion_prior_of(shipped / "world")
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps({"world_hash": weights, **decoding,
                                 "motion_prior": {**prior, "zoom_per_unit": prior["zoom_per_unit"] + 0.005}}))
    with pytest.raises(ValueError, match="with the motion prior"):
        ship_decoding(moved, "cmd", shipped)
    assert ship_main(["--decoding", str(tmp_path / "none.json"), "--command", "cmd", "--dest", str(shipped)]) == 2
    assert json.loads((shipped / "metrics.json").read_text())["psnr@8"] == 13.0
    assert load_dynamics(shipped / "world")[1] == before

    info = ship_decoding(good, "ochre eval ochre/shipped/world TOKENS --guidance 1.5 ...", shipped)
    _, after, _ = load_dynamics(shipped / "world")
    assert after.guidance == 1.5 and after.copy_boost == before.copy_boost
    assert checkpoint_hash(shipped / "world") == weights                  # the weights stay
    assert json.loads((shipped / "metrics.json").read_text())["psnr@8"] == 14.0
    assert info["decoding_chosen_by"].startswith("ochre eval") and info["world_step"] == 1000
    assert json.loads((shipped / "MODEL.json").read_text()) == info and not list(shipped.glob("*.tmp"))
