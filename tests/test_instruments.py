"""The eval instruments (docs/metrics.md): tours against the synthetic renderer's truth, the
inverse-dynamics model, the classifier two-sample test. Each is shown to score what it claims: the
truth itself scores high, a still or reversed dream low, noise is told from real frames and real
frames from themselves are not."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from ochre.actions import encode_window_actions
from ochre.data import synth
from ochre.data.loader import WindowDataset, split_sources
from ochre.data.prepare import PrepareConfig, prepare
from ochre.data.shards import read_index
from ochre.eval import idm, tours
from ochre.eval.c2st import c2st, c2st_interval
from ochre.eval.rollouts import psnr

SEED, EPISODES, STEPS, FPS = 5, 8, 300, 8.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Synthetic recordings, prepared: 8 episodes of 300 ticks (120 kept frames each at 8 fps)."""
    root = tmp_path_factory.mktemp("instruments")
    synth.synthesize(root / "src", synth.SynthConfig(episodes=EPISODES, steps=STEPS, seed=SEED, workers=1),
                     progress=False)
    prepare(root / "src", root / "clips", PrepareConfig(fps=FPS), workers=1, progress=False)
    return root / "clips"


def _test_sources(clips) -> frozenset[str]:
    return split_sources(read_index(clips))["test"]


def _sequences(clips, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every clip of a split: frames uint8 (K, H, W, 3) and actions (K-1, 4) each."""
    ds = WindowDataset(clips, window=2, split=split, shuffle=False)
    frames, actions = [], []
    for sample in ds.samples():
        clip = ds.load_clip(sample, 0, sample["meta"]["frames"])
        frames.append(clip["frames"].permute(0, 2, 3, 1).numpy())
        actions.append(clip["actions"].numpy())
    return frames, actions


# ---- provenance and the camera path ---------------------------------------------------------------

def test_prepare_carries_the_synthetic_provenance_into_every_clip(clips):
    src = clips.parent / "src"
    for sample in WindowDataset(clips, window=2, split="all", shuffle=False).samples():
        meta = json.loads((src / sample["meta"]["source"] / "metadata.json").read_text())
        assert sample["meta"]["synthetic"] == meta["synthetic"]
        assert set(meta["synthetic"]) == {"seed", "episode", "steps", "loading_frames"}
        assert (meta["synthetic"]["seed"], meta["synthetic"]["steps"]) == (SEED, STEPS)


def test_episode_poses_are_the_rendered_episode_s_poses():
    poses, ep = synth.episode_poses(SEED, 3, 60), synth.render_episode(SEED, 3, 60)
    for field in tours.POSE_FIELDS:
        np.testing.assert_array_equal(getattr(poses, field), getattr(ep.poses, field))


def test_a_walk_from_a_pose_mid_path_continues_that_path():
    """tour_path starts from a recorded pose, which may be mid-fall: walking the episode's own
    remaining ticks from there must give the episode's poses back, eye height included."""
    world = synth.make_world(SEED)
    actions, _, _ = synth.episode_actions(SEED, 2, 200)
    poses = synth.episode_poses(SEED, 2, 200)
    falls = np.flatnonzero(np.diff(poses.eye) < -1e-6)
    assert len(falls), "episode 2 never falls; pick another to exercise the mid-fall start"
    for t in (0, int(falls[0]) + 1, 150):
        keys = {k: v[t:] for k, v in actions.keys.items()}
        cont = synth.walk(world, actions.camera[t:], keys, (poses.u[t], poses.v[t], poses.yaw[t], poses.pitch[t]),
                          eye=poses.eye[t])
        for field in tours.POSE_FIELDS:
            np.testing.assert_allclose(getattr(cont, field), getattr(poses, field)[t:], atol=1e-9, err_msg=field)


@pytest.mark.parametrize("fps", [8.0, 10.0, 5.0, 20.0, 7.5])
def test_tour_actions_round_trip_through_prepare_s_encoding(fps):
    for name, (steps, action) in tours.SEGMENTS.items():
        ticks = tours.step_ticks(steps, fps)
        step = Fraction(20) / Fraction(fps)                     # prepare's kept ticks: floor(k * 20 / fps)
        np.testing.assert_array_equal(ticks, [int(k * step) for k in range(steps + 1)])
        camera, keys = tours.tick_controls(tours.segment_actions(name, 1)[0], ticks)
        move_x = keys["right"].astype(float) - keys["left"]
        move_z = keys["forward"].astype(float) - keys["back"]
        got = encode_window_actions(camera, move_x, move_z, ticks)
        np.testing.assert_allclose(got, np.tile(action, (steps, 1)), atol=1e-6, err_msg=name)


def test_tick_controls_refuse_actions_keys_cannot_hold():
    with pytest.raises(ValueError, match="move_x, move_z"):
        tours.tick_controls(np.array([[0.0, 0.0, 0.5, 0.0]]), np.array([0, 2]))


# ---- tours -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toured(clips):
    """Tours from 6 test contexts with the truth itself as the dream (the oracle)."""
    contexts = tours.tour_contexts(clips, _test_sources(clips), 6)
    assert not isinstance(contexts, str), contexts
    metrics, arrays = tours.run_tours(lambda context, actions, truth: truth, contexts, FPS, progress=False)
    return contexts, metrics, arrays


def test_contexts_are_test_frames_rendered_at_their_recorded_pose(clips, toured):
    contexts, _, arrays = toured
    assert len(contexts) == 6 and {c.key.split("/")[0] for c in contexts} <= _test_sources(clips)
    frames = np.stack([c.frame for c in contexts])
    # The clip's frame (H.264 at crf 10) against the renderer at the recovered pose: the same view.
    assert psnr(frames, arrays["still/truth"][:, 0]).min() > 30
    other = np.roll(arrays["still/truth"][:, 0], 1, axis=0)
    assert psnr(frames, other).max() < 20                     # and not just any view of this world


def test_the_oracle_scores_every_tour_metric_at_its_best(toured):
    _, m, _ = toured
    assert m["tour/contexts"] == 6
    assert m["tour/turn_sign_acc"] >= 0.95 and m["tour/strafe_sign_acc"] >= 0.95 and m["tour/walk_sign_acc"] >= 0.95
    assert m["tour/turn_gain"] == pytest.approx(1.0)
    assert m["tour/revisit_psnr"] > 40          # a full turn comes back to the context's view
    for name, (steps, _) in tours.SEGMENTS.items():
        last = min(16, steps)
        assert set(k for k in m if k.startswith(f"tour/{name}/")) == {
            f"tour/{name}/psnr@4", f"tour/{name}/psnr@{last}",
            f"tour/{name}/repeat/psnr@4", f"tour/{name}/repeat/psnr@{last}"}
        assert m[f"tour/{name}/psnr@{last}"] == 60.0
    assert m["tour/turn_right/repeat/psnr@16"] < 20       # the context frame held is far from a turn's end


def test_a_still_dream_fails_the_motion_metrics(toured):
    _, _, arrays = toured
    still = {k: (np.repeat(v[:, :1], v.shape[1], axis=1) if k.endswith("/dream") else v) for k, v in arrays.items()}
    m = tours.tour_metrics(still)
    assert m["tour/turn_sign_acc"] <= 0.1 and m["tour/walk_sign_acc"] <= 0.1 and m["tour/strafe_sign_acc"] <= 0.1
    assert abs(m["tour/turn_gain"]) < 0.05


def test_the_walk_ceiling_probe_ranks_its_priors(toured):
    """bench/walk_ceiling on the fixture's walks, with an exact codec standing in for the tokenizer:
    no zoom is the repeat row, each context's best zoom is at least the best single zoom, and walking
    forward is best met by expanding the view."""
    from ochre.bench import walk_ceiling as wc

    contexts, _, arrays = toured
    frames = np.stack([c.frame for c in contexts])
    np.testing.assert_array_equal(wc.zoom_frames(frames, 1.0), frames)
    codes = np.arange(16 * 16).reshape(1, 16, 16)
    np.testing.assert_array_equal(wc.zoom_codes(codes, 1.0), codes)
    assert (wc.zoom_codes(codes, 2.0)[0, 7:9, 7:9] == codes[0, 7:9, 7:9].repeat(2, 0).repeat(2, 1)[1:3, 1:3]).all()

    exact = (lambda f: f.copy(), lambda f: f.copy())
    rows = wc.ceiling(frames, arrays["walk/truth"], 0.0, *exact)
    for h in wc.HORIZONS:
        assert rows[f"repeat@{h}"]["over_repeat"] == 0 and rows[f"commanded_zoom@{h}"]["over_repeat"] == 0
        assert rows[f"still_recon@{h}"]["over_repeat"] == 0                    # an exact codec changes nothing
        assert rows[f"best_zoom_each@{h}"]["psnr"] >= rows[f"best_one_zoom@{h}"]["psnr"] - 1e-9
        lo, hi = rows[f"best_zoom_each@{h}"]["interval"]
        assert lo <= rows[f"best_zoom_each@{h}"]["over_repeat"] <= hi
        assert rows[f"best_plane_each@{h}"]["psnr"] >= rows[f"best_one_plane@{h}"]["psnr"] - 1e-9
        assert rows[f"best_one_plane@{h}"]["psnr"] >= rows[f"repeat@{h}"]["psnr"] - 1e-9   # flow 0 is on the grid
    assert rows["best_one_zoom_factor@16"] > 1.0 and len(rows["zoom_grid@16"]) == len(wc.ZOOM_GRID)
    assert rows["best_one_plane_setting@16"]["flow_per_step"] > 0          # walking brings the ground nearer

    # The ground-plane flow: none is the frame itself; some moves the rows below the horizon and no row above it.
    np.testing.assert_array_equal(wc.plane_flow(frames, 32.0, 0.0), frames)
    moved = wc.plane_flow(frames, 32.0, 0.05)
    np.testing.assert_array_equal(moved[:, :32], frames[:, :32])
    assert (moved[:, 40:] != frames[:, 40:]).any()

    # What the action model reads: a stand-in that calls a pair forward when its frames differ. The truth
    # always moves; with no zoom per unit and no flow every prior is the frame itself, so none reads forward.
    def differs(pairs):
        moving = (pairs[:, 0] != pairs[:, 1]).reshape(len(pairs), -1).any(1)
        return np.stack([np.ones(len(pairs), int)] * 2 + [np.where(moving, 2, 1), np.ones(len(pairs), int)], 1)
    read = wc.read_as_walking(differs, arrays["walk/truth"], 0.0, [(32.0, 0.0)])
    assert read["pairs"] == 6 * 16 and read["true"] > 0.9
    assert read["plane_row32_flow0"] == 0 and all(read[f"zoom_x{r:g}"] == 0 for r in wc.RATES)
    read = wc.read_as_walking(differs, arrays["walk/truth"], 0.05, [(32.0, 0.05)])
    assert read["plane_row32_flow0.05"] == 1 and read["zoom_x1"] == 1


def test_a_dream_moving_the_other_way_fails_the_sign_metrics(toured):
    """Each segment dreamed as its opposite: turns and strafes mirrored, walks played backwards."""
    _, _, arrays = toured
    opposite = {"turn_right": "turn_left", "look_up": "look_down", "look_up_slow": "look_down_slow",
                "strafe_left": "strafe_right"}
    opposite |= {b: a for a, b in opposite.items()}
    swapped = dict(arrays)
    for name in tours.SEGMENTS:
        if name in opposite:
            swapped[f"{name}/dream"] = arrays[f"{opposite[name]}/truth"]
        elif name in tours.WALKS:
            swapped[f"{name}/dream"] = arrays[f"{name}/truth"][:, ::-1]
    m = tours.tour_metrics(swapped)
    assert m["tour/turn_sign_acc"] <= 0.1 and m["tour/strafe_sign_acc"] <= 0.2 and m["tour/walk_sign_acc"] <= 0.25
    assert m["tour/turn_gain"] < 0


def test_the_truth_moves_as_its_actions_say(toured):
    """The estimators read the renderer's motion with the right signs (docs/metrics.md conventions):
    a right turn moves content left, looking up moves it down, walking forward zooms in."""
    _, _, arrays = toured

    def share(name, axis, sign):
        s = tours.rollout_shifts(arrays[f"{name}/truth"])[..., axis]
        kept = np.abs(s) >= tours.MIN_TRUE_SHIFT
        return np.mean(np.sign(s[kept]) == sign)
    assert share("turn_right", 1, -1) >= 0.95 and share("turn_left", 1, 1) >= 0.95
    assert share("look_up", 0, 1) >= 0.95 and share("look_down_slow", 0, -1) >= 0.95
    assert share("strafe_right", 1, -1) >= 0.8 and share("strafe_left", 1, 1) >= 0.8
    true_zoom, _ = tours.walk_zooms(arrays)
    assert len(true_zoom) >= 60 and np.mean(true_zoom > 1) >= 0.75


def test_the_walk_rule_judges_only_true_expansions_of_at_least_min_true_zoom():
    """A step forward can only expand the view: a true zoom within 0.02 above 1 is one the tokenizer's
    reconstruction of the truth reads on the wrong side too often, and a true zoom below 1 is the
    estimator misreading the truth (docs/metrics.md, bench/results/walk_rule_*): neither is judged. From
    MIN_TRUE_ZOOM = 0.03 on, the dream must read an expansion too."""
    assert tours.MIN_TRUE_ZOOM == pytest.approx(0.03)
    true = np.array([1.02, 0.98, 1.03, 0.97, 1.04, 1.10])
    dream = np.array([0.99, 0.90, 1.02, 0.98, 0.99, 1.00])
    assert tours.zoom_agreement(true, dream) == pytest.approx(1 / 3)       # 1.03 -> 1.02 only; 1.00 is no zoom
    assert tours.zoom_agreement(np.array([1.0, 1.02, 0.98, 0.9]), np.array([1.05] * 4)) is None


def test_walk_steps_that_climb_or_are_blocked_are_not_judged(toured):
    """walk_zooms keeps the WALKS steps on level ground where the camera moved."""
    _, _, arrays = toured
    n = len(arrays["still/truth"])
    flat = dict(arrays)
    for name in tours.WALKS:
        pose = arrays[f"{name}/pose"].copy()
        pose[..., 2] = 1.6
        pose[..., 0] += np.arange(pose.shape[1]) * 0.3                       # moving every step
        flat[f"{name}/pose"] = pose
    assert len(tours.walk_zooms(flat)[0]) == 2 * n * 16
    blocked = dict(flat)
    for name in tours.WALKS:
        pose = flat[f"{name}/pose"].copy()
        pose[:, 8:, :2] = pose[:, 7:8, :2]                                   # against a wall from step 7 on
        pose[:, 3, 2] += 1.0                                                  # a jump over steps 2 and 3
        blocked[f"{name}/pose"] = pose
    assert len(tours.walk_zooms(blocked)[0]) == 2 * n * (16 - 9 - 2)


def test_the_walk_rule_bench_counts_fewer_steps_for_larger_thresholds(toured):
    """bench/walk_rule.py's table: per candidate, the walk steps judged (fewer as the threshold grows),
    the oracle's accuracy (here the truth itself: 1.0) and how often a pure turn reads that zoom."""
    from ochre.bench.walk_rule import CANDIDATES, rows

    _, _, arrays = toured
    table = rows({**arrays, **{f"{n}/dream": arrays[f"{n}/truth"] for n in tours.SEGMENTS}})
    assert [r["min_true_zoom"] for r in table] == list(CANDIDATES)
    steps = [r["steps"] for r in table]
    assert steps == sorted(steps, reverse=True) and steps[0] > 0
    assert all(r["oracle_walk_sign_acc"] == 1.0 for r in table if r["steps"])
    assert all(0 <= r["turn_reads_zoom"] <= 1 for r in table)


def test_zoom_factors_recover_a_known_zoom_of_a_textured_image():
    """A smooth random texture sampled analytically, zoomed about the centre and shifted."""
    rng = np.random.default_rng(0)
    freqs, phases = rng.uniform(-0.6, 0.6, (24, 2)), rng.uniform(0, 2 * np.pi, 24)

    def image(zoom, shift):
        p = np.arange(64) + 0.5 - 32                                       # pixel centres about the centre
        y, x = np.meshgrid(p / zoom - shift[0], p / zoom - shift[1], indexing="ij")
        g = np.cos(freqs[:, 0, None, None] * y + freqs[:, 1, None, None] * x + phases[:, None, None]).sum(0)
        return np.repeat((128 + 20 * g).clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    for zoom, shift in ((1.05, (0.0, 0.0)), (0.94, (1.5, -2.0)), (1.08, (-3.0, 4.0)), (1.0, (2.0, 1.0))):
        frames = np.stack([image(1.0, (0.0, 0.0)), image(zoom, shift)])
        assert tours.zoom_factors(frames)[0] == pytest.approx(zoom, abs=0.011), (zoom, shift)
    still = np.stack([image(1.0, (0.0, 0.0))] * 2)
    assert tours.zoom_factors(still)[0] == 1.0


def test_tours_name_why_they_cannot_run_on_recordings_without_provenance(tmp_path, make_minerl, clips):
    for i in range(3):
        make_minerl(f"rec{i}", n=40, seed=i)
    prepare(tmp_path / "src", tmp_path / "plain", PrepareConfig(), workers=1, progress=False)
    reason = tours.tour_contexts(tmp_path / "plain", _test_sources(tmp_path / "plain"), 4)
    assert isinstance(reason, str) and "not an `ochre synth` recording" in reason
    assert "no clips" in tours.tour_contexts(clips, frozenset({"elsewhere"}), 4)


def test_a_dream_of_the_wrong_shape_is_refused(toured):
    contexts, _, _ = toured
    with pytest.raises(ValueError, match="the dream of 'still'"):
        tours.run_tours(lambda c, a, truth: truth[:, :-1], contexts[:1], FPS, progress=False)


def test_tour_video_shows_every_segment(toured, tmp_path):
    from ochre.data.video import decode_frames

    tours.tour_video(tmp_path / "tour.mp4", toured[2], n=2)
    frames = decode_frames(str(tmp_path / "tour.mp4"))
    assert len(frames) == sum(steps + 1 for steps, _ in tours.SEGMENTS.values())
    assert frames.shape[1] == 24 + 2 * (4 * 64 + 40)          # title, then truth | dream per context


# ---- inverse-dynamics model --------------------------------------------------------------------------

def test_labels_split_each_control_into_three_classes():
    actions = np.array([[0.5, -0.3, 0.0, 1.0],       # right, up, no strafe, forward
                        [-0.2, 0.05, -1.0, -0.5],    # left, none, strafe left, back
                        [0.1, 0.11, 0.34, 0.0]])     # |0.1| is none; 0.11 down; strafe right
    np.testing.assert_array_equal(idm.labels(actions), [[2, 0, 2, 1], [0, 1, 0, 0], [1, 2, 1, 2]])


def test_balanced_accuracy_puts_chance_at_a_third_whatever_the_mix():
    true = np.array([1] * 90 + [0] * 5 + [2] * 5)
    assert idm.balanced_accuracy(true, np.ones(100, np.int64)) == pytest.approx(1 / 3)
    assert idm.balanced_accuracy(true, true) == 1.0


@pytest.fixture(scope="module")
def trained(clips, tmp_path_factory):
    return idm.load_or_train(clips, tmp_path_factory.mktemp("idm"), steps=400, log=lambda line: None, progress=False)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "known miss: trained on this fixture's 6 train episodes (~700 pairs) the inverse-dynamics model does not "
    "generalise: held-out yaw 0.24, pitch 0.53 (balanced; chance 0.33); the same 400 steps on 600 episodes "
    "read yaw 0.65, pitch 0.78 on test, still short of 0.7 / 0.6 for yaw"))
def test_the_idm_reads_turns_and_looks_back_from_held_out_frames(clips, trained):
    held_out = [_sequences(clips, split) for split in ("test", "val")]
    frames = [f for fs, _ in held_out for f in fs]
    actions = [a for _, acts in held_out for a in acts]
    scores = [idm.accuracy(trained, f[None], a[None]) for f, a in zip(frames, actions)]
    real = {k: np.mean([s[k] for s in scores]) for k in scores[0]}
    assert real["acc_yaw"] >= 0.7 and real["acc_pitch"] >= 0.6, real
    # Frame t shown twice: no motion to read, so the yaw head is at chance (balanced: 1/3).
    still = np.concatenate([np.stack([f[:-1], f[:-1]], axis=1) for f in frames])       # (P, 2, H, W, 3)
    true = idm.labels(np.concatenate(actions))[:, idm.HEADS.index("yaw")]
    guess = idm.predict(trained, still)[:, idm.HEADS.index("yaw")]
    assert abs(idm.balanced_accuracy(true, guess) - 1 / 3) <= 0.1


def test_the_idm_is_reused_for_the_same_data_and_trained_again_for_other(clips, tmp_path):
    logs = []
    first = idm.load_or_train(clips, tmp_path, steps=3, log=logs.append, progress=False)
    assert len(logs) == 2 and (tmp_path / "model.safetensors").is_file()
    logs.clear()
    again = idm.load_or_train(clips, tmp_path, steps=3, log=logs.append, progress=False)
    assert logs == [] and all((a == b).all() for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    record = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**record, "clips": "another data set"}))
    idm.load_or_train(clips, tmp_path, steps=3, log=logs.append, progress=False)
    assert "other data" in logs[0] and json.loads((tmp_path / "config.json").read_text())["clips"] == record["clips"]
    (tmp_path / "model.safetensors").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="does not describe"):
        idm.load(tmp_path)
    logs.clear()
    idm.load_or_train(clips, tmp_path, steps=3, log=logs.append, progress=False)
    assert "training" in logs[0]                          # a damaged folder is replaced, never loaded


# ---- classifier two-sample test ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_rollouts(clips):
    frames, _ = _sequences(clips, "all")
    joined = np.concatenate(frames)
    return joined[: len(joined) // 8 * 8].reshape(-1, 8, 64, 64, 3)     # (R, 8, H, W, 3), consecutive frames


def test_c2st_tells_noise_from_real_frames(real_rollouts):
    noise = np.random.default_rng(0).integers(0, 256, (60, 8, 64, 64, 3), dtype=np.uint8)
    assert c2st(noise, real_rollouts[1::2][:60]) >= 0.95


def test_c2st_cannot_tell_real_frames_from_real_frames(real_rollouts):
    a, b = real_rollouts[0::2][:60], real_rollouts[1::2][:60]          # interleaved: the same scenes
    score = c2st(a, b, seed=0)
    assert abs(score - 0.5) <= 0.1
    assert c2st(a, b, seed=0) == score                                # deterministic for a seed


def test_c2st_has_an_interval_over_held_out_rollouts_that_few_rollouts_widen(real_rollouts):
    """The interval holds the score (which is c2st's, unchanged), and scoring 4 held-out rollouts a
    side, as few as a late-horizon test may have, leaves the score far less certain than 30 do."""
    a, b = real_rollouts[0::2][:60], real_rollouts[1::2][:60]
    value, (lo, hi) = c2st_interval(a, b, seed=0)
    assert value == c2st(a, b, seed=0) and lo <= value <= hi
    few, (few_lo, few_hi) = c2st_interval(a[:8], b[:8], seed=0)
    assert few_lo <= few <= few_hi
    assert few_hi - few_lo > 1.5 * (hi - lo), ((lo, hi), (few_lo, few_hi))
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 64, 64, 3), dtype=np.uint8)
    assert c2st_interval(noise, b[:8])[1][0] >= 0.95          # noise is told apart in every resample


def test_a_stratified_interval_resamples_each_group_on_its_own():
    """Group b is constant, so the interval of mean(a) - mean(b) is group a's own bootstrap interval,
    whatever b's size; resampling both as one pool would mix b's values into a's."""
    from ochre.eval.intervals import interval, stratified_interval

    a = np.random.default_rng(1).normal(size=40)
    b = np.full(7, 3.0)
    value, ci = stratified_interval(lambda ia, ib: a[ia].mean() - b[ib].mean(), (len(a), len(b)), seed=5)
    assert value == pytest.approx(a.mean() - 3.0)
    own = interval(lambda idx: a[idx].mean(), len(a), seed=5)[1]
    width = own[1] - own[0]
    assert ci[1] - ci[0] == pytest.approx(width, rel=0.15) and ci[0] < value < ci[1]


def test_c2st_refuses_a_single_rollout(real_rollouts):
    with pytest.raises(ValueError, match="2 or more"):
        c2st(real_rollouts[:1], real_rollouts)


def test_over_repeat_is_paired_so_shared_difficulty_cancels():
    """Rollouts differ a lot in difficulty (the same for both dreamers) and the model is 1 dB better on
    each: the paired interval is tight around 1, narrower than either dreamer's own interval."""
    from ochre.eval.intervals import mean_interval
    from ochre.eval.rollouts import over_repeat, public

    rng = np.random.default_rng(0)
    hard = rng.normal(12, 3, 40)
    noise = rng.normal(0, 0.1, 40)
    model = {"psnr@8": 0.0, "per_rollout": {"psnr@8": hard + 1 + noise}, "curve": np.zeros(3)}
    repeat = {"per_rollout": {"psnr@8": hard}}
    m = over_repeat(model, repeat)
    lo, hi = m["psnr@8/over_repeat/ci"]
    assert abs(m["psnr@8/over_repeat"] - 1) < 0.05 and lo < m["psnr@8/over_repeat"] < hi and hi - lo < 0.1
    own = mean_interval(hard)[1]
    assert own[1] - own[0] > 10 * (hi - lo)
    assert public(model) == {"psnr@8": 0.0}


def test_a_bar_is_met_only_when_the_interval_s_worse_end_clears_it():
    from ochre.eval.bars import DEMO, SHIPPED, Bar, bars_table, judge

    m = {"psnr@8/over_repeat": 1.4, "psnr@8/over_repeat/ci": [0.9, 1.9], "psnr@32/over_repeat": 0.5,
         "psnr@32/over_repeat/ci": [0.1, 0.9], "tour/turn_sign_acc": 0.99, "tour/walk_sign_acc": 0.6,
         "c2st@129-256": 0.96, "test_world/psnr@8/over_repeat": 2.0}
    v = {r["metric"]: r for r in judge(m, DEMO)}
    assert v["psnr@8/over_repeat"]["verdict"] == "missed" and abs(v["psnr@8/over_repeat"]["gap"] - 0.1) < 1e-9
    assert v["psnr@32/over_repeat"]["verdict"] == "met" and v["tour/turn_sign_acc"]["verdict"] == "met"
    assert v["tour/walk_sign_acc"]["verdict"] == "missed" and v["c2st@129-256"]["verdict"] == "missed"
    w = {r["metric"]: r for r in judge(m, DEMO, "test_world/")}
    assert w["psnr@8/over_repeat"]["verdict"] == "met" and w["psnr@32/over_repeat"]["verdict"] == "not measured"
    two = judge({"grad_ratio@256": 1.0, "grad_ratio@256/ci": [0.85, 1.3]}, [Bar("grad_ratio@256", 0.8, 1.2)])[0]
    assert two["verdict"] == "missed" and abs(two["gap"] - 0.1) < 1e-9 and two["worse_end"] == 1.3
    rel = {r["metric"]: r for r in judge({"learned/yaw_response": 0.6, "real/yaw_response": 0.9,
                                           "tour/walk/psnr@16": 12.0, "tour/walk/repeat/psnr@16": 11.5}, SHIPPED)}
    assert rel["learned/yaw_response"]["verdict"] == "missed"          # 0.6 < 0.7 x 0.9
    assert rel["tour/walk/psnr@16"]["verdict"] == "missed"             # 12.0 < 11.5 + 1
    assert rel["recon_psnr"]["verdict"] == "not measured"
    assert "| psnr@8/over_repeat | ≥ 1 | 1.400 | 0.900 | missed by 0.100 |" in bars_table(judge(m, DEMO))
