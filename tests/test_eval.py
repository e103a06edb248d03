"""`ochre eval` as docs/metrics.md defines it: one step path with the runtime, intervals, splits,
and the calibration that shows each metric separates good dreams from bad ones."""

from __future__ import annotations

import numpy as np
import pytest
from live_model import make_model

from ochre.eval.intervals import interval, mean_interval, worse_end


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model"))


def test_eval_dreams_the_frames_the_runtime_plays(world):
    """The same seed, context and actions: the eval's dreamer and the torch backend give the same
    frames, byte for byte (one live step, one noise rule, one render)."""
    from ochre.eval.dreamers import Codec, ModelDreamer
    from ochre.models.lookup import from_run, load
    from ochre.runtime.stepper import make_stepper

    model = from_run(world)
    context = model.context_frames()[:3]
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 12, 4)).astype(np.float32)
    stepper = make_stepper("torch", model, batch=3, seed=7)
    played = [stepper.reset(context).copy()] + [stepper.step(a).copy() for a in actions.transpose(1, 0, 2)]
    tokenizer, dynamics, sampling = load(model)
    dreamed, _ = ModelDreamer("ochre", dynamics, Codec(tokenizer), sampling, batch=3).dream(context, actions, seed=7)
    assert np.array_equal(np.stack(played, axis=1), dreamed)


def test_a_dream_that_keeps_only_some_steps_decodes_the_same_frames_for_them(world):
    """The replays of other actions decode only step 16 (delta_psnr@16 reads no other): the same
    frame as a dream that decodes every step, for the model and for random codes."""
    from ochre.eval.dreamers import Codec, ModelDreamer, RandomDreamer
    from ochre.models.lookup import from_run, load

    model = from_run(world)
    context = model.context_frames()[:3]
    actions = np.random.default_rng(1).uniform(-1, 1, (3, 16, 4)).astype(np.float32)
    tokenizer, dynamics, sampling = load(model)
    for dreamer in (ModelDreamer("ochre", dynamics, Codec(tokenizer), sampling, batch=2),
                    RandomDreamer(Codec(tokenizer), tokenizer.config.codebook_size)):
        whole, codes = dreamer.dream(context, actions, seed=3)
        last, same = dreamer.dream(context, actions, seed=3, keep=slice(16, 17))
        assert last.shape == (3, 1, 64, 64, 3) and np.array_equal(last, whole[:, 16:17])
        assert np.array_equal(codes, same)


def test_intervals_cover_the_mean_and_shrink_with_more_rollouts():
    rng = np.random.default_rng(0)
    few, many = rng.normal(10, 2, 20), rng.normal(10, 2, 2000)
    v, (lo, hi) = mean_interval(few)
    assert lo < v < hi and lo < 10 < hi
    _, (lo2, hi2) = mean_interval(many)
    assert hi2 - lo2 < (hi - lo) / 5
    seeds = np.stack([few, few + 1])                                 # (seeds, N): the seeds' mean, resampled
    assert mean_interval(seeds)[0] == pytest.approx(few.mean() + 0.5)
    value, ci = interval(lambda idx: float(np.corrcoef(few[idx], few[idx] * 2 + 1)[0, 1]), len(few))
    assert value == pytest.approx(1.0) and ci[0] == pytest.approx(1.0)
    m = {"psnr@8": 14.0, "psnr@8/ci": [13.5, 14.4]}
    assert worse_end(m, "psnr@8") == 13.5 and worse_end(m, "psnr@8", higher_is_better=False) == 14.4


def test_the_second_world_tours_as_many_contexts_as_asked():
    from ochre.eval.evaluate import EvalConfig, _Data, _tour_count

    main, other = (_Data(name, None, [], None) for name in ("", "test_world"))
    cfg = EvalConfig(tours=32, world_tours=16)
    assert (_tour_count(main, cfg), _tour_count(other, cfg)) == (32, 16)
    cfg = EvalConfig(tours=32)                                     # default: as many as the main split
    assert (_tour_count(main, cfg), _tour_count(other, cfg)) == (32, 32)
    with pytest.raises(ValueError, match="world_tours"):
        EvalConfig(world_tours=-1)


def test_splits_are_disjoint_stable_and_hold_out_five_percent_each():
    from ochre.data.loader import split_sources

    index = {"shards": [{"samples": [{"source": f"rec-{i:03d}"} for i in range(200)]}]}
    s = split_sources(index)
    assert len(s["test"]) == len(s["val"]) == 10 and len(s["train"]) == 180
    assert not (s["test"] & s["val"]) and not (s["train"] & (s["test"] | s["val"]))
    assert split_sources(index) == s
    small = {"shards": [{"samples": [{"source": "a"}, {"source": "b"}]}]}
    t = split_sources(small)
    assert len(t["test"]) == 1 and not t["val"] and len(t["train"]) == 1
    one = {"shards": [{"samples": [{"source": "a"}]}]}
    assert split_sources(one)["train"] == {"a"}


def test_the_plan_spreads_rollouts_over_every_trajectory():
    from ochre.eval.rollouts import LONG, SHORT, Trajectory, make_plan

    trajs = [Trajectory(f"s{i}", f"k{i}", np.zeros((80 + 40 * i, 2, 2, 3), np.uint8), np.zeros((79 + 40 * i, 4)))
             for i in range(4)]
    plan = make_plan(trajs, rollouts=20, long_rollouts=6, spacing=8)
    assert len(plan.short) == 20 and {t for t, _ in plan.short} == {0, 1, 2, 3}
    assert all(s + SHORT < len(trajs[t].frames) for t, s in plan.short)
    assert len(plan.long) == 6 and len({t for t, _ in plan.long}) == 4
    assert all(plan.short[o][0] != t for (t, _), o in zip(plan.short, plan.other))
    assert LONG > SHORT


def _small_data(root, codebook: int, tokenizer_steps: int):
    """A small synthetic data set with every split, a briefly trained tokenizer of `codebook` codes, its
    token shards, and world models of the ochre and action-blind recipes (random-ish: the tests judge the
    metrics) in root."""
    from ochre.cli import main
    from ochre.models.dynamics import DynamicsConfig
    from ochre.models.sampling import SamplingConfig
    from ochre.models.tokenizer import TokenizerConfig, TokenizerTrainConfig
    from ochre.train.tokenizer import train as train_tokenizer
    from ochre.train.world import WorldTrainConfig, train

    assert main(["synth", str(root / "src"), "--episodes", "40", "--steps", "120", "--seed", "4"]) == 0
    assert main(["prepare", str(root / "src"), str(root / "clips"), "--per-shard", "4"]) == 0
    train_tokenizer(root / "clips", root / "tok", TokenizerConfig.preset("tiny", codebook_size=codebook),
                    TokenizerTrainConfig(steps=tokenizer_steps, batch=16, warmup=10), progress=False, eval_frames_n=16)
    assert main(["tokenize", str(root / "clips"), "--tokenizer", str(root / "tok"), "--out", str(root / "tokens")]) == 0
    small = dict(codebook_size=codebook, embed_dim=8, hidden=(16,), head_dim=8, action_embed=8, impl="torch")
    for name, blind in (("ochre", False), ("blind", True)):
        train(root / "tokens", root / name, DynamicsConfig(**small, blind=blind),
              WorldTrainConfig(steps=20, batch=4, window=6, unroll=1, warmup=2), SamplingConfig(), recipe_name=name,
              progress=False)
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """_small_data with a 256-code tokenizer of 120 steps: enough for the eval's mechanics."""
    return _small_data(tmp_path_factory.mktemp("eval"), codebook=256, tokenizer_steps=120)


def test_the_long_rollouts_truth_is_made_once_for_every_dreamer(data, monkeypatch):
    """Which codes the real 256-step trajectories use (code_usage@256's denominator, an encode of
    L x 257 frames) and their gradients are the same for every dreamer on a data set: made once."""
    from ochre.eval import EvalConfig
    from ochre.eval import rollouts as ro
    from ochre.eval.evaluate import calibrate

    made, real = [], ro.long_truth
    monkeypatch.setattr(ro, "long_truth", lambda *a: made.append(1) or real(*a))
    cfg = EvalConfig(split="all", rollouts=4, long_rollouts=2, seeds=(0,), tours=0, learned=False, idm=False,
                     c2st=False)
    table = calibrate(data / "tokens", {"ochre": data / "ochre"}, cfg=cfg, log=lambda m: None)
    assert len(made) == 1
    # The repeated frame's 256 steps are its context: it can use no more codes than the real trajectories.
    assert 0 < table["repeat_frame"]["code_usage@256"] <= 1 and table["random_codes"]["code_usage@256"] > 1
    assert table["ochre"]["grad_ratio@256"] > 0


def test_the_decoding_sweep_chooses_on_val_and_never_reads_test(data, tmp_path, monkeypatch):
    """Settings are chosen on val: a sweep decodes val trajectories only, never a test one."""
    from ochre.bench import decoding_sweep
    from ochre.data import loader
    from ochre.eval import EvalConfig

    splits = loader.split_sources(loader.read_index(data / "clips"))
    read: set[str] = set()
    real_samples = loader.ShardStream.samples

    def spy(self):
        for sample in real_samples(self):
            read.add(sample["meta"]["source"])
            yield sample
    monkeypatch.setattr(loader.ShardStream, "samples", spy)
    cfg = EvalConfig(split="val", rollouts=4, long_rollouts=1, seeds=(0,), learned=False, tours=0, idm=False,
                     c2st=False)
    grid = [(1.0, 0.0, 0.0, 1.0, 0.0), (0.5, 6.0, 4.0, 0.5, 0.02)]
    result = decoding_sweep.sweep(data / "ochre", data / "tokens", grid, out_dir=tmp_path, cfg=cfg, log=lambda m: None)
    assert read and read <= splits["val"] and not read & splits["test"]
    assert len(result["candidates"]) == 2 and all("psnr@8/ci" in c["metrics"] for c in result["candidates"])
    with pytest.raises(ValueError, match="val split only"):
        decoding_sweep.sweep(data / "ochre", data / "tokens", [(1.0, 0.0, 0.0, 1.0, 0.0)], out_dir=tmp_path,
                             cfg=EvalConfig(split="test"), log=lambda m: None)


def test_a_decoding_sweep_resumes_with_the_candidates_it_finished(data, tmp_path):
    """A killed or rerun sweep reuses a candidate's eval made from the same weights, tokens and
    settings, and evaluates again when any of them differs."""
    import json

    from ochre.bench import decoding_sweep
    from ochre.data.shards import read_index
    from ochre.eval import EvalConfig
    from ochre.models.checkpoint import latest_checkpoint

    cfg = EvalConfig(split="val", rollouts=2, long_rollouts=1, seeds=(0,), learned=False, tours=0, idm=False,
                     c2st=False)
    grid = [(1.0, 6.0, 4.0, 0.5, 0.0)]
    first = decoding_sweep.sweep(data / "ochre", data / "tokens", grid, out_dir=tmp_path, cfg=cfg, log=lambda m: None)
    logs: list[str] = []
    again = decoding_sweep.sweep(data / "ochre", data / "tokens", grid, out_dir=tmp_path, cfg=cfg, log=logs.append)
    assert any("evaluated before" in line for line in logs) and again == first
    metrics = tmp_path / "t1-c6-f4-w0.5-m0" / "metrics.json"
    m = json.loads(metrics.read_text())
    assert m["sources"] == read_index(data / "tokens")["sources_digest"]          # the recordings, by any path
    metrics.write_text(json.dumps({**m, "world_hash": "another model"}))
    logs.clear()
    decoding_sweep.sweep(data / "ochre", data / "tokens", grid, out_dir=tmp_path, cfg=cfg, log=logs.append)
    assert not any("evaluated before" in line for line in logs)
    assert json.loads(metrics.read_text())["world_hash"] == m["world_hash"]
    # The same weights under another motion prior are another model: their hash alone cannot say so.
    prior = m["motion_prior"]
    assert prior["zoom_per_unit"] == json.loads((latest_checkpoint(data / "ochre") / "config.json")
                                                .read_text())["config"]["zoom_per_unit"]
    metrics.write_text(json.dumps({**m, "motion_prior": {**prior, "zoom_per_unit": prior["zoom_per_unit"] + 0.01}}))
    logs.clear()
    decoding_sweep.sweep(data / "ochre", data / "tokens", grid, out_dir=tmp_path, cfg=cfg, log=logs.append)
    assert not any("evaluated before" in line for line in logs)
    # An eval made without the realism test does not serve a sweep that guards realism.
    from dataclasses import replace
    sampling = {"temperature": 1.0, "copy_boost": 6.0, "fill_boost": 4.0, "walk_boost": 0.5, "min_p": 0.0}
    assert decoding_sweep._done(metrics.parent, data / "ochre", data / "tokens", cfg, sampling) is not None
    assert decoding_sweep._done(metrics.parent, data / "ochre", data / "tokens", replace(cfg, c2st=True),
                                sampling) is None


def test_the_decoding_sweep_keeps_only_candidates_whose_late_dreams_pass_the_realism_bar():
    """docs/metrics.md#bars: c2st@129-256 <= 0.95 for the default demo. A setting that sharpens PSNR
    but makes late dreams easier to tell from real play is not chosen; --no-c2st turns the guard off."""
    from ochre.bench.decoding_sweep import admissible

    healthy = {"code_usage@256": 0.9, "grad_ratio@256": 1.0, "grad_ratio@256/ci": [0.9, 1.1]}
    assert admissible({**healthy, "c2st@129-256": 0.93})
    assert not admissible({**healthy, "c2st@129-256": 0.951})
    assert admissible({**healthy, "c2st@129-256": 0.951}, realism=False)
    assert not admissible({**healthy, "grad_ratio@256/ci": [0.9, 1.3], "c2st@129-256": 0.9})
    assert not admissible({**healthy, "c2st@129-256": 0.9, "c2st@129-256/ci": [0.85, 0.97]})   # its upper end
    with pytest.raises(KeyError):                 # guarded but never measured: an error, not a pass
        admissible(healthy)


def test_the_decoding_sweep_guards_the_shipped_model_by_its_own_bars():
    """--bars shipped: both c2st windows under the shipped model's ceilings (0.8 early, 0.85 late) and the
    detail inside its [0.8, 1.2], where the demo's guard allows 0.95 late and 1.25."""
    from ochre.bench.decoding_sweep import admissible
    from ochre.eval.bars import SHIPPED

    healthy = {"code_usage@256": 0.9, "grad_ratio@256": 1.0, "grad_ratio@256/ci": [0.9, 1.1], "c2st@9-32": 0.7,
               "c2st@129-256": 0.8}
    assert admissible(healthy, bars=SHIPPED)
    assert not admissible({**healthy, "c2st@129-256": 0.9}, bars=SHIPPED)
    assert admissible({**healthy, "c2st@129-256": 0.9})
    assert not admissible({**healthy, "c2st@9-32": 0.81}, bars=SHIPPED)
    assert not admissible({**healthy, "grad_ratio@256/ci": [0.9, 1.22]}, bars=SHIPPED)
    assert admissible({**healthy, "grad_ratio@256/ci": [0.9, 1.22]})
    with pytest.raises(KeyError):
        admissible({k: v for k, v in healthy.items() if k != "c2st@9-32"}, bars=SHIPPED)


@pytest.mark.slow
def test_the_calibration_separates_good_dreams_from_bad(tmp_path_factory):
    """docs/metrics.md#calibration: each metric reads what it claims. An action-blind model does not
    follow the actions (delta_psnr@16 interval holds 0, the inverse-dynamics model reads its yaw at
    chance, its tours turn no particular way); a still dream turns and walks nowhere; uniform random
    codes are told from real frames every time; the tokenizer's reconstruction of the truth (the
    oracle) is not, and moves the right way. Its own data: the oracle's tour signs read through the
    tokenizer, and the 120-step, 256-code one of `data` blurs slow looks and walks past what the estimators
    read (oracle turn sign 0.83, walk 0.93); 800 steps of 2048 codes read 0.997 and 0.971."""
    from ochre.eval import EvalConfig
    from ochre.eval.evaluate import calibrate

    data = _small_data(tmp_path_factory.mktemp("calibration"), codebook=2048, tokenizer_steps=800)
    cfg = EvalConfig(split="all", rollouts=48, long_rollouts=4, seeds=(0,), tours=32, learned=False)
    table = calibrate(data / "tokens", {"blind": data / "blind"}, cfg=cfg, log=lambda m: None)
    blind, still, noise, oracle = table["blind"], table["still"], table["random_codes"], table["oracle"]
    lo, hi = blind["delta_psnr@16/ci"]
    assert lo <= 0.0 <= hi
    assert abs(blind["idm/dream/acc_yaw"] - 1 / 3) <= 0.1
    assert blind["tour/turn_sign_acc"] <= 0.6
    assert still["tour/turn_sign_acc"] <= 0.1 and still["tour/walk_sign_acc"] <= 0.1
    assert min(noise["c2st@1-8"], noise["c2st@9-32"], noise["c2st@129-256"]) >= 0.95
    assert abs(oracle["c2st@1-8"] - 0.5) <= 0.1 and abs(oracle["c2st@9-32"] - 0.5) <= 0.1
    assert min(oracle["tour/turn_sign_acc"], oracle["tour/strafe_sign_acc"]) >= 0.95
    assert oracle["idm/dream/acc_yaw"] > blind["idm/dream/acc_yaw"] + 0.2
    # The walk sign's 0.95 is a known miss on some CPUs: the fixture's tokenizer trains to other codes where the
    # float arithmetic differs, and the same code reads the oracle's walk sign 0.971 on an AVX-512 machine and
    # 0.943 on an AVX2-only one (docs/metrics.md#calibration). Below 0.90, the lowest any oracle has read (one
    # recording of the demo's second world), the estimator itself is broken.
    walk = oracle["tour/walk_sign_acc"]
    assert walk >= 0.90, walk
    if walk < 0.95:
        pytest.xfail(f"known miss: the oracle's walk sign reads {walk:.3f} on this machine's fixture, under 0.95")


def test_code_pairs_counts_the_neighbours_training_never_put_together():
    """bench/code_pairs: the table holds exactly the adjacent pairs of its grids, each direction on its
    own, and a grid's unseen share counts its new pairs over all its adjacent pairs."""
    import numpy as np

    from ochre.bench.code_pairs import pair_table, same_share, summary, unseen_share

    k = 5
    grid = np.array([[0, 1, 2], [3, 4, 0]])                                  # (2, 3)
    table = pair_table([grid[None]], k)
    assert sorted(np.flatnonzero(table[0])) == [0 * k + 1, 1 * k + 2, 3 * k + 4, 4 * k + 0]
    assert sorted(np.flatnonzero(table[1])) == [0 * k + 3, 1 * k + 4, 2 * k + 0]
    assert unseen_share(grid, table, k) == 0.0
    other = np.array([[1, 0, 2], [3, 4, 0]])       # new pairs: (1,0) and (0,2) across, (1,3) and (0,4) down
    assert unseen_share(other, table, k) == pytest.approx(4 / 7)              # 4 of 2*2 + 1*3 adjacent pairs
    shares = unseen_share(np.stack([[grid, other], [grid, grid]]), table, k)  # (rollouts 2, steps 2)
    np.testing.assert_allclose(shares, [[0, 4 / 7], [0, 0]])
    s = summary(shares)
    assert s["by_step"] == [0.0, round(2 / 7, 5)] and s["@1"] == round(2 / 7, 5)
    flat = np.array([[1, 1, 2], [1, 4, 2]])                   # one code twice: (1,1) across; (1,1), (2,2) down
    np.testing.assert_allclose(same_share(np.stack([grid, flat])), [0, 3 / 7])
    assert s["@1/ci"][0] <= s["@1"] <= s["@1/ci"][1]


def test_pair_decoding_scores_each_code_against_its_drawn_neighbours():
    """bench/pair_decoding: neighbour_scores sums the pair scores a code would make with the four drawn
    neighbours (none past the border); a strong term makes the refined grid's pairs seen ones."""
    import numpy as np
    import torch

    from ochre.bench.code_pairs import pair_counts
    from ochre.bench.pair_decoding import neighbour_scores, pair_scores, refine

    k = 3
    train = np.array([[[0, 0, 1], [0, 0, 1]]])                       # seen: (0,0), (0,1) across; (0,0), (1,1) down
    sh, sv = pair_scores(pair_counts([train], k), k, pmi=False)
    assert sh[0, 0] == sh[0, 1] == 0 and sh[1, 0] == -1 and sv[0, 0] == sv[1, 1] == 0 and sv[0, 1] == -1
    codes = torch.tensor([[[2, 0], [1, 2]]])                          # (1, 2, 2)
    s = neighbour_scores(codes, (sh, sv))                             # (1, 2, 2, 3)
    # position (0, 1): left neighbour 2, bottom neighbour 2; code c scores sh[2, c] + sv[c, 2]
    assert torch.equal(s[0, 0, 1], sh[2] + sv[:, 2])
    # position (1, 0): right neighbour 2, top neighbour 2: sh[c, 2] + sv[2, c]
    assert torch.equal(s[0, 1, 0], sh[:, 2] + sv[2])
    flat = torch.zeros(1, 2, 2, k)                                     # no preference of its own
    out = refine(codes, flat, (sh, sv), beta=50.0, rounds=3, gen=torch.Generator().manual_seed(0))
    assert float(neighbour_scores(out, (sh, sv)).gather(-1, out[..., None]).sum()) == 0.0    # every pair seen
    pmi = pair_scores(pair_counts([train], k), k, pmi=True)
    assert pmi[0][0, 1] > pmi[0][1, 0] and float(pmi[0].abs().max()) <= 5


def test_mask_rounds_start_as_the_models_own_draw_and_learn_from_revealed_neighbours(world):
    """bench/mask_rounds: an untrained refiner drawing in one round gives the live step's codes; the
    refined mixture keeps the model's proposals (a gate pushed to one draws them in any number of
    rounds, in any order); an unrolled window's last steps read the model's own draws; the schedule fixes
    every position by the last round; the loss starts at
    the model's own and falls below it once the refiner learns that a grid's codes follow its revealed ones."""
    import torch

    from ochre.bench.mask_rounds import (
        Refiner,
        RefinerConfig,
        draw_rounds,
        fixed_after,
        refiner_loss,
        touches_unseen,
        world_steps,
    )
    from ochre.models.checkpoint import load_dynamics
    from ochre.models.step import live_step

    model, sampling, _ = load_dynamics(world)
    model.requires_grad_(False)
    K, C = model.config.codebook_size, model.config.hidden[-1]
    torch.manual_seed(0)
    refiner = Refiner(RefinerConfig(K, C, width=16))
    tokens = torch.randint(0, K, (2, 16, 16))
    actions = torch.tensor([[1.0, 0, 0, 0], [0, 0.3, 0, 1]])
    noise = torch.rand(2, 16, 16)
    with torch.no_grad():
        want, _, _ = live_step(model, tokens, actions, noise, model.init_state(2), sampling)
        mixture, state = model.step(tokens, actions, model.init_state(2), boost=sampling.boosts, parts=True)
        x = state[len(model.config.hidden) - 1]
        assert torch.equal(draw_rounds(model, refiner, x, mixture, noise, sampling, 1), want)
        four = draw_rounds(model, refiner, x, mixture, noise, sampling, 4)
        assert four.shape == want.shape and 0 <= int(four.min()) and int(four.max()) < K
        refiner.convs[-1].bias[-1] = 60.0                                   # the gate at one: the proposals
        prio = torch.rand(2, 16, 16)
        for order, first in ((None, None), (prio, None), (prio, lambda d: d == mixture.codes)):
            assert torch.equal(draw_rounds(model, refiner, x, mixture, noise, sampling, 3, order, first),
                               mixture.codes)
        with pytest.raises(ValueError, match="random order"):
            draw_rounds(model, refiner, x, mixture, noise, sampling, 3, None, first=lambda d: d == mixture.codes)
    # Positions in a pair the table never saw: (0, 1) seen across, (0, 0) seen down, nothing else.
    seen_h, seen_v = torch.zeros(9, dtype=torch.bool), torch.zeros(9, dtype=torch.bool)
    seen_h[0 * 3 + 1], seen_v[0 * 3 + 0] = True, True
    grid = torch.tensor([[[0, 1, 2], [0, 1, 1]]])              # (0,1) ok, (1,2) not; (0,1) ok, (1,1) not; down (0,0) ok
    assert touches_unseen(grid, (seen_h, seen_v), 3).tolist() == [[[False, True, True], [False, True, True]]]
    # Windows: the steps before the unroll read recorded play, the unrolled ones the model's own draws.
    window, acts = torch.randint(0, K, (2, 5, 16, 16)), torch.rand(2, 4, 4) * 2 - 1
    xs, _, _, target = world_steps(model, window, acts, 0.0, unroll=2, refiner=refiner, sampling=sampling)
    recorded, *_ = world_steps(model, window, acts, 0.0)
    assert xs.shape == (8, C, 16, 16) and torch.equal(target, window[:, 1:].flatten(0, 1))
    xs, recorded = xs.unflatten(0, (2, 4)), recorded.unflatten(0, (2, 4))
    assert torch.equal(xs[:, :2], recorded[:, :2]) and not torch.allclose(xs[:, 2:], recorded[:, 2:])
    assert [fixed_after(r, 4, 256) for r in (1, 2, 3, 4)] == [19, 75, 158, 256]
    assert fixed_after(1, 50, 256) == 1                                     # at least one more a round

    # Grids of one code each, a random state: only the revealed codes tell the hidden ones.
    refiner = Refiner(RefinerConfig(K, C, width=16))
    n = 6
    xs = torch.randn(n, C, 16, 16)
    target = torch.randint(0, K, (n, 1, 1)).expand(n, 16, 16).contiguous()
    codes, gates = torch.randint(0, K, (n, 16, 16)), torch.full((n, 16, 16), -4.0)
    gen = torch.Generator().manual_seed(1)
    loss, base = refiner_loss(model, refiner, xs, codes, gates, target, gen=gen)
    assert float(loss) == pytest.approx(float(base), rel=1e-6)
    opt = torch.optim.Adam(refiner.parameters(), lr=3e-3)
    for _ in range(40):
        loss, base = refiner_loss(model, refiner, xs, codes, gates, target, gen=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < float(base) - 1.0, (float(loss), float(base))


def test_a_dream_bank_holds_the_models_own_grids_and_trains_a_decoder_on_them(data, tmp_path, capsys):
    """bench/dream_decoder: a bank keeps every dreamed grid of train-split rollouts (the eval's dreamer:
    its first grids are the live step's from the rollout's first frame); `train-tokenizer --dream-codes`
    has the discriminator judge the decoder's pictures of them (logged as dream_grad_ratio), records the
    bank in the run, and refuses a bank with codes the tokenizer lacks, naming the file."""
    import json

    import numpy as np

    from ochre.bench.dream_decoder import bank, save_bank
    from ochre.cli import main

    arrays = bank(data / "ochre", data / "tokens", steps=6, split="train", seed=3, batch=4)
    codes, step = arrays["codes"], arrays["step"]
    assert codes.dtype == np.uint16 and codes.shape[1:] == (16, 16) and len(codes) % 6 == 0
    assert step.tolist()[:12] == [1, 2, 3, 4, 5, 6] * 2 and int(codes.max()) < 256
    assert len(np.unique(codes[step == 6].reshape(len(codes) // 6, -1), axis=0)) > 1
    save_bank(tmp_path / "bank.npz", arrays)
    assert not list(tmp_path.glob(".*.tmp"))

    argv = ["train-tokenizer", str(data / "clips"), "--out", str(tmp_path / "dec"), "--decoder-of", str(data / "tok"),
            "--adversarial", "0.5", "--disc-warmup", "1", "--steps", "3", "--batch", "4", "--device", "cpu",
            "--precision", "fp32", "--dream-codes", str(tmp_path / "bank.npz")]
    assert main(argv) == 0
    logs = [json.loads(x) for x in (tmp_path / "dec" / "log.jsonl").read_text().splitlines()]
    assert all("dream_grad_ratio" in r for r in logs) and "adv/weight" in logs[-1]
    from ochre.models.checkpoint import read_checkpoint_config
    assert "dream_codes" in read_checkpoint_config(tmp_path / "dec")["extra"]["run"]["inputs"]

    save_bank(tmp_path / "wide.npz", {**arrays, "codes": arrays["codes"] + 256})
    capsys.readouterr()
    argv[argv.index("--out") + 1] = str(tmp_path / "dec2")
    argv[-1] = str(tmp_path / "wide.npz")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "wide.npz" in err and "outside this tokenizer's 256 codes" in err and not (tmp_path / "dec2").exists()
    assert main(["train-tokenizer", str(data / "clips"), "--out", str(tmp_path / "x"), "--decoder-of",
                 str(data / "tok"), "--dream-codes", str(tmp_path / "bank.npz")]) == 2
    assert "pass --adversarial" in capsys.readouterr().err


def test_recon_scores_read_every_decoder_on_the_same_frames(data, tmp_path):
    """bench/recon_scores: one tokenizer under two names scores alike, makes the same codes and reads what
    the tokenizer's own held-out eval reads on those frames; each value sits inside its interval."""
    import shutil

    import pytest as _pytest

    from ochre.bench.recon_scores import score
    from ochre.models.checkpoint import load_tokenizer
    from ochre.train.tokenizer import evaluate

    shutil.copytree(data / "tok", tmp_path / "twin")
    got = score(data / "clips", [data / "tok", tmp_path / "twin"], split="test", frames_n=16)
    a, b = got["tok"], got["twin"]
    assert a == b and a["same_codes_as_first"] and a["frames"] == 16
    for name in ("recon_psnr", "recon_grad_ratio"):
        assert a[f"{name}/ci"][0] <= a[name] <= a[f"{name}/ci"][1]
    own = evaluate(load_tokenizer(data / "tok"), data / "clips", tmp_path, n=16, split="test")
    assert own["recon_psnr"] == _pytest.approx(a["recon_psnr"]) and own["recon_grad_ratio"] == _pytest.approx(
        a["recon_grad_ratio"])


def test_decoder_precision_reads_each_precision_against_fp64(data, tmp_path, capsys):
    """bench/decoder_precision: fp32 frames lie within the rounding level of the fp64 decode, bf16's
    further; one tokenizer under two names reads alike; a bank with codes the tokenizer lacks is
    refused naming the file."""
    import json
    import shutil

    import numpy as np

    from ochre.bench.decoder_precision import main, measure
    from ochre.bench.dream_decoder import save_bank

    grids = np.random.default_rng(0).integers(0, 256, (8, 16, 16))
    got = measure(data / "tok", grids, batch=4)
    assert set(got) == {"fp32", "bf16"} and got["fp32"]["max"] <= 1 and got["fp32"]["psnr"] > 60
    assert got["bf16"]["mean"] > got["fp32"]["mean"] and got["bf16"]["psnr"] < got["fp32"]["psnr"]
    save_bank(tmp_path / "bank.npz", {"codes": grids.astype(np.uint16), "step": np.ones(8, np.int16)})
    shutil.copytree(data / "tok", tmp_path / "twin")
    out = tmp_path / "p.json"
    assert main([str(data / "tok"), str(tmp_path / "twin"), "--bank", str(tmp_path / "bank.npz"), "--grids", "8",
                 "--batch", "4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["levels_from_fp64"]
    assert rows["tok"] == rows["twin"]
    save_bank(tmp_path / "wide.npz", {"codes": grids.astype(np.uint16) + 256, "step": np.ones(8, np.int16)})
    capsys.readouterr()
    assert main([str(data / "tok"), "--bank", str(tmp_path / "wide.npz"), "--grids", "8", "--batch", "4"]) == 2
    assert "wide.npz" in capsys.readouterr().err


def test_pixel_walk_zooms_the_walking_pictures_and_leaves_the_rest():
    """bench/pixel_walk: while walking, the copy prior proposes the codes of its picture zoomed by the
    whole zoom owed (and owes none after); a turn or a standstill proposes what the model does; the
    model's own copy prior is back once the probe ends."""
    import torch

    from ochre.bench.pixel_walk import picture_zoom, zoom_pictures
    from ochre.models.dynamics import Dynamics, DynamicsConfig

    def decode(codes):                   # a code is a grey 4x4 block: an exact codec at zoom 1
        return codes.to(torch.uint8).repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand(-1, 3, -1, -1)

    def encode(frames):
        return frames[:, 0, 1::4, 1::4].long()

    model = Dynamics(DynamicsConfig(codebook_size=256, embed_dim=8, hidden=(8,), head_dim=8, action_embed=8,
                                    zoom_per_unit=0.05, shift_per_unit=(3.0, 3.0), impl="torch"))
    torch.manual_seed(0)
    tokens = torch.randint(0, 256, (3, 16, 16))
    act = model.with_flag(torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    view = torch.zeros(3, 5)
    before = model.proposals(tokens, act, view)
    with picture_zoom(encode, decode) as count:
        codes, kind, owed, _ = model.proposals(tokens, act, view)
    assert count["zoomed"] == 1
    want = encode(zoom_pictures(decode(tokens[:1]), torch.exp(torch.tensor([0.05]))))
    assert torch.equal(codes[0], want[0]) and not torch.equal(codes[0], before[0][0])
    assert owed[0, 2].abs() < 1e-6 and before[2][0, 2] == pytest.approx(0.05)      # the zoom was paid
    for i in (1, 2):                                                                # a turn, a standstill
        assert torch.equal(codes[i], before[0][i]) and torch.equal(owed[i], before[2][i])
    again = model.proposals(tokens, act, view)
    assert torch.equal(again[0], before[0])                                        # the probe is gone


def test_paired_compares_two_evals_rollout_by_rollout(tmp_path):
    """bench/paired: B − A per rollout on the same real frames; a dreamer a constant amount closer to every
    real frame reads that gain with an interval far narrower than either PSNR's; other rollouts are refused."""
    import numpy as np

    from ochre.bench.paired import load, main, paired

    rng = np.random.default_rng(0)
    real = rng.integers(64, 192, (40, 33, 8, 8, 3))
    error = 2 * rng.integers(2, 30, (40, 1, 1, 1, 1)) * np.where(rng.random(real.shape) < 0.5, -1, 1)
    far = (real + error).astype(np.uint8)                          # rollouts differ in difficulty: 4-58 levels off
    near = (real + error // 2).astype(np.uint8)                    # half the error on every rollout: +6.02 dB
    real = real.astype(np.uint8)
    keys, starts = np.array(["t"] * 40), np.arange(40)
    for name, dream in (("a", far), ("b", near)):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "rollouts.npz", real=real, dream=dream, keys=keys, starts=starts)
    r = paired(load(tmp_path / "a"), load(tmp_path / "b"))
    d, (lo, hi) = r["psnr@8"]["b_minus_a"]
    (_, (alo, ahi)) = r["psnr@8"]["a"]
    assert d == pytest.approx(20 * np.log10(2)) and hi - lo < 1e-9 < ahi - alo - 3   # the difficulty cancels
    assert paired(load(tmp_path / "a"), load(tmp_path / "a"))["psnr@32"]["b_minus_a"] == (0.0, [0.0, 0.0])
    np.savez(tmp_path / "b" / "rollouts.npz", real=real[::-1], dream=near, keys=keys, starts=starts)
    with pytest.raises(ValueError, match="same real frames"):
        paired(load(tmp_path / "a"), load(tmp_path / "b"))
    assert main([str(tmp_path / "a"), str(tmp_path / "missing")]) == 2


def test_learning_curve_fits_the_gain_over_the_prior_per_doubling(tmp_path):
    """bench/learning_curve: three runs whose dreams have the prior's error, half and a quarter of it (gains
    0, +6.02, +12.04 dB on every rollout) at 100, 200 and 400 steps read a slope of 6.02 dB per doubling,
    its interval tight though the rollouts differ in difficulty; one point, or other rollouts, refused."""
    import numpy as np

    from ochre.bench.learning_curve import curve, gains, main
    from ochre.bench.paired import load

    rng = np.random.default_rng(1)
    real = rng.integers(64, 192, (30, 33, 8, 8, 3))
    error = 4 * rng.integers(1, 15, (30, 1, 1, 1, 1)) * np.where(rng.random(real.shape) < 0.5, -1, 1)
    keys, starts = np.array(["t"] * 30), np.arange(30)
    for name, div in (("prior", 1), ("m100", 1), ("m200", 2), ("m400", 4)):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "rollouts.npz", real=real.astype(np.uint8),
                 dream=(real + error // div).astype(np.uint8), keys=keys, starts=starts)
    prior = load(tmp_path / "prior")
    points = [(s, gains(prior, load(tmp_path / f"m{s}"))) for s in (100, 200, 400)]
    r = curve(points, boots=200)
    v, (lo, hi) = r["slope_per_doubling"]["psnr@8"]
    assert v == pytest.approx(20 * np.log10(2)) and hi - lo < 1e-9
    assert r["points"][0]["gain"]["psnr@32"] == (0.0, [0.0, 0.0])
    with pytest.raises(ValueError, match="two points"):
        curve(points[:1])
    with pytest.raises(ValueError, match="numbers of rollouts"):
        curve([points[0], (200, points[1][1][:, :10])])
    np.savez(tmp_path / "m200" / "rollouts.npz", real=real[::-1].astype(np.uint8), dream=real.astype(np.uint8),
             keys=keys, starts=starts)
    with pytest.raises(ValueError, match="same real frames"):
        gains(prior, load(tmp_path / "m200"))
    out = tmp_path / "curve.json"
    assert main(["--point", "100", str(tmp_path / "prior"), str(tmp_path / "m100"), "--point", "400",
                 str(tmp_path / "prior"), str(tmp_path / "m400"), "--boots", "50", "--out", str(out)]) == 0
    assert out.is_file() and main(["--point", "100", str(tmp_path / "prior"), str(tmp_path / "gone")]) == 2
