"""The dynamics model and its decoding: shapes, the warp prior's direction, action dropout,
guidance, and the one sampling function."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from ochre.models.dynamics import Dynamics, DynamicsConfig
from ochre.models.sampling import SamplingConfig, sample_mixture, sample_tokens
from ochre.models.step import live_step
from ochre.train.world import WorldLoss, WorldTrainConfig, recipe, unroll_at

SMALL = dict(codebook_size=64, grid=16, embed_dim=8, hidden=(8, 12), head_dim=8, action_embed=8, impl="torch")


def _model(**kw) -> Dynamics:
    torch.manual_seed(0)
    return Dynamics(DynamicsConfig(**{**SMALL, "memory": True, **kw}))


def test_step_has_fixed_shapes_and_a_preallocatable_state():
    m = _model()
    tokens, actions = torch.randint(0, 64, (3, 16, 16)), torch.rand(3, 4) * 2 - 1
    state = m.init_state(3)
    assert [s.shape for s in state] == [(3, 8, 16, 16), (3, 12, 16, 16), (3, 32, 73), (3, 5)]
    logits, new = m.step(tokens, actions, state)
    assert logits.shape == (3, 64, 16, 16) and logits.dtype == torch.float32
    assert [s.shape for s in new] == [s.shape for s in state]


def test_coords_tell_the_model_where_on_screen_each_token_is():
    """A convolution cannot tell the screen's middle rows apart; with `coords` the row and column are
    two more input planes of every layer, so the same code everywhere gets position-dependent logits."""
    flat = torch.full((1, 16, 16), 7)
    for coords in (False, True):
        m = _model(coords=coords, copy_bias=False, warp=False)
        with torch.no_grad():
            for cell in m.cells:
                cell.conv_x.weight.normal_()
            logits, _ = m.step(flat, torch.zeros(1, 4), m.init_state(1))
        inner = logits[0, :, 4:12, 4:12]                                     # away from the zero padding
        spread = (inner - inner[:, :1, :1]).abs().amax().item()
        assert (spread > 1e-3) == coords, (coords, spread)
        extra = 2 if coords else 0
        assert [c.conv_x.in_channels for c in m.cells] == [8 + 5 + extra, 8 + 5 + extra]


def _copies(m: Dynamics, tokens: torch.Tensor, actions, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`steps` steps of a model that always takes its proposal (a dominant copy logit, fills and
    memory too), one action row per step -> the last codes and state."""
    with torch.no_grad():
        for p in (m.copy_logit, m.fill_logit, m.memory_logit):
            if p is not None:
                p.fill_(1e4)
        state = m.init_state(len(tokens))
        for t in range(steps):
            logits, state = m.step(tokens, torch.as_tensor(actions[t % len(actions)]).expand(len(tokens), 4), state)
            tokens = logits.argmax(1)
    return tokens, state


def test_strafing_shifts_and_walking_zooms_the_copies():
    """A strafe moves the codes sideways like a turn; walking forward magnifies them about the centre
    once the zoom owed moves the edge tokens by a whole one, and the view carries the rest."""
    from ochre.models.dynamics import ZOOM_STEP

    m = _model(shift_per_unit=1.0, strafe_per_unit=1.0, zoom_per_unit=0.1)
    tokens = torch.arange(256).view(1, 16, 16) % 64
    got, _ = _copies(m, tokens, [[0.0, 0.0, 1.0, 0.0]], 1)
    assert torch.equal(got[0, :, :15], tokens[0, :, 1:])                            # strafe right: content left
    got, state = _copies(m, tokens, [[0.0, 0.0, 0.0, 1.0]], 1)
    assert torch.equal(got, tokens) and state[-1][0, 2] == pytest.approx(0.1)        # owed, not yet moved
    got, state = _copies(m, tokens, [[0.0, 0.0, 0.0, 1.0]], 2)
    assert 2 * 0.1 >= ZOOM_STEP and torch.equal(got[0, 7:9, 7:9], tokens[0, 7:9, 7:9])
    assert torch.equal(got[0, 8, 15], tokens[0, 8, 14]) and torch.equal(got[0, 8, 0], tokens[0, 8, 1])
    assert state[-1][0, 2].abs() < 1e-6                                             # the zoom was paid


def test_turning_away_and_back_brings_back_what_was_seen():
    """The panorama: a full turn, or a turn and back, shows the codes seen before, not a guess; moving
    clears it (translation changes the view of everything)."""
    m = _model(shift_per_unit=1.0)
    assert m.panorama_shape() == (32, 24)
    tokens = torch.randint(0, 64, (1, 16, 16), generator=torch.Generator().manual_seed(3))
    back, _ = _copies(m, tokens, [[1.0, 0, 0, 0]] * 6 + [[-1.0, 0, 0, 0]] * 6, 12)
    assert torch.equal(back, tokens)
    spin, _ = _copies(m, tokens, [[1.0, 0, 0, 0]], 24)                   # 24 columns of panorama: a full turn
    assert torch.equal(spin, tokens)
    forgetful, _ = _copies(_model(shift_per_unit=1.0, memory=False), tokens, [[1.0, 0, 0, 0]], 24)
    assert not torch.equal(forgetful, tokens)                             # wrapping the 16 columns around
    moved, _ = _copies(m, tokens, [[1.0, 0, 0, 0]] * 4 + [[0, 0, 0.01, 0]] + [[1.0, 0, 0, 0]] * 20, 25)
    assert not torch.equal(moved, tokens)


def test_the_render_shows_the_view_owed():
    """A slow turn moves the shown frame every step although the codes move a whole token at a time."""
    from ochre.models import Tokenizer, TokenizerConfig
    from ochre.models.step import render

    torch.manual_seed(0)
    tok = Tokenizer(TokenizerConfig(channels=(8, 8, 8), blocks=(0, 0, 0), code_dim=8, codebook_size=64)).eval()
    m = _model(shift_per_unit=1.0)
    tokens = torch.randint(0, 64, (1, 16, 16))
    frames, state = [], m.init_state(1)
    with torch.no_grad():
        m.copy_logit.fill_(1e4)
        for _ in range(4):
            frames.append(render(tok, tokens, state[-1]))
            logits, state = m.step(tokens, torch.tensor([[0.25, 0.0, 0.0, 0.0]]), state)
            tokens = logits.argmax(1)
    shifts = [float(state_x) for state_x in torch.linspace(0, 0.75, 4)]
    assert shifts and all(not torch.equal(a, b) for a, b in zip(frames, frames[1:]))


@pytest.mark.parametrize("yaw, pitch, dx, dy", [(1.0, 0.0, 1, 0), (-1.0, 0.0, -1, 0), (0.0, 1.0, 0, 1)])
def test_copy_prior_moves_content_the_way_the_camera_turns(yaw, pitch, dx, dy):
    """Turning right moves content left (new[x] = old[x + 1] for a one-token turn); looking down moves
    it up. With a dominant copy logit the model's argmax is the shifted current frame."""
    m = _model(shift_per_unit=1.0)
    with torch.no_grad():
        m.copy_logit.fill_(1e4)
    tokens = torch.randint(0, 64, (1, 16, 16))
    logits, _ = m.step(tokens, torch.tensor([[yaw, pitch, 0.0, 0.0]]), m.init_state(1))
    pred = logits.argmax(1)[0]
    want = torch.roll(tokens[0], shifts=(-dy, -dx), dims=(0, 1))
    inner = (slice(1, 15), slice(1, 15))                      # the revealed edge has nothing to copy
    assert torch.equal(pred[inner], want[inner])


@pytest.mark.parametrize("yaw, pitch", [(2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)])
def test_revealed_positions_get_the_wrapped_columns_or_the_edge_row(yaw, pitch):
    """A two-token turn right reveals the two right columns: they are proposed the two that left on the
    left (same rows). Looking down reveals the bottom rows: they are proposed the bottom edge row."""
    m = _model(shift_per_unit=1.0)
    with torch.no_grad():
        m.copy_logit.fill_(1e4)
        m.fill_logit.fill_(1e4)
    tokens = torch.randint(0, 64, (1, 16, 16))
    logits, _ = m.step(tokens, torch.tensor([[yaw, pitch, 0.0, 0.0]]), m.init_state(1))
    pred, t = logits.argmax(1)[0], tokens[0]
    if yaw:
        assert torch.equal(pred, torch.roll(t, shifts=-int(yaw), dims=1))      # wraps around
    else:
        rows = (torch.arange(16) + int(pitch)).clamp(0, 15)
        assert torch.equal(pred, t[rows])                                      # edge row repeats


def test_without_fill_revealed_positions_get_no_proposal():
    m = _model(shift_per_unit=1.0, fill=False)
    with torch.no_grad():
        m.copy_logit.fill_(30.0)
    tokens = torch.randint(0, 64, (1, 16, 16))
    p = m.step(tokens, torch.tensor([[1.0, 0.0, 0.0, 0.0]]), m.init_state(1))[0].exp()
    torch.testing.assert_close(p.sum(1), torch.ones(1, 16, 16))                # log-probabilities
    assert p[0, :, :, 15].max() < 0.5                                          # nothing proposed there
    assert (p[0, :, :, :15].amax(0) > 0.999).all()


def test_the_gate_mixes_the_proposal_with_the_head():
    """p = g · onehot(proposal) + (1 − g) · softmax(head): with the gate at 0 (g = 1/2) a code the head
    gives q gets q / 2, the proposal gets 1/2 + q / 2."""
    m = _model(shift_per_unit=1.0, fill=False)
    tokens, act = torch.randint(0, 64, (1, 16, 16)), torch.zeros(1, 4)
    q = m.head_logits(m.step(tokens, act, m.init_state(1))[1][1]).softmax(-1).permute(0, 3, 1, 2)  # the head
    p = m.step(tokens, act, m.init_state(1))[0].exp()
    want = 0.5 * q + 0.5 * torch.nn.functional.one_hot(tokens, 64).permute(0, 3, 1, 2)
    torch.testing.assert_close(p, want, rtol=1e-4, atol=1e-6)


def test_walking_keeps_only_the_walk_share_of_the_boosts():
    """A held movement key scales both boosts by walk_boost (a step forward changes the view);
    turning alone keeps them whole."""
    torch.manual_seed(0)
    m = Dynamics(DynamicsConfig.preset("tiny", codebook_size=64, hidden=(8,), embed_dim=8, head_dim=8,
                                       action_embed=8)).eval()
    tokens = torch.randint(0, 64, (3, 16, 16))
    state = m.init_state(3)
    actions = torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, -0.5, 0.0]])
    cfg = SamplingConfig(copy_boost=4.0, fill_boost=2.0, walk_boost=0.25)
    with torch.no_grad():
        plain, _ = m.step(tokens, actions, state)
        boosted, _ = m.step(tokens, actions, state, boost=cfg.boosts)
    extra = (boosted - plain).amax(dim=1)                                          # (B, h, w)
    codes, kind, *_ = m.proposals(tokens, m.with_flag(actions), state[-1])
    want = torch.where(kind == 0, 4.0, 2.0) * torch.tensor([1.0, 0.25, 1 - 0.75 * 0.5])[:, None, None]
    torch.testing.assert_close(extra, want)
    with pytest.raises(ValueError, match="walk_boost"):
        SamplingConfig(walk_boost=1.5)


def test_decoding_boosts_raise_only_the_proposed_codes():
    """boost = (b_copy, b_fill) adds b_copy to each copied code's logit and b_fill to each fill's,
    nothing else; SamplingConfig.boosts carries them."""
    m = _model(shift_per_unit=1.0)
    tokens, state = torch.randint(0, 64, (2, 16, 16)), m.init_state(2)
    actions = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, -1.0, 1.0, 0.0]])
    plain, _ = m.step(tokens, actions, state)
    cfg = SamplingConfig(copy_boost=3.0, fill_boost=5.0, walk_boost=1.0)
    boosted, _ = m.step(tokens, actions, state, boost=cfg.boosts)
    assert torch.equal(m.step(tokens, actions, state, boost=(0.0, 0.0))[0], plain)    # no boost by default
    codes, kind, *_ = m.proposals(tokens, m.with_flag(actions), state[-1])
    inside = kind == 0
    want = torch.zeros_like(plain).scatter_(1, codes[:, None], torch.where(inside, 3.0, 5.0)[:, None])
    torch.testing.assert_close(boosted - plain, want, rtol=0, atol=1e-4)
    assert inside[0, :, 14:].logical_not().all() and inside[0, :, :14].all()   # 2 revealed columns


def test_slow_turns_move_the_copied_codes_by_carrying_the_sub_token_rest():
    """A 0.4-token turn per step rounds to no move; carried over, 5 steps move the codes by 2 tokens."""
    m = _model(shift_per_unit=1.0)
    with torch.no_grad():
        m.copy_logit.fill_(1e4)
    tokens = torch.randint(0, 64, (1, 16, 16))
    state, current = m.init_state(1), tokens
    for _ in range(5):
        logits, state = m.step(current, torch.tensor([[0.4, 0.0, 0.0, 0.0]]), state)
        current = logits.argmax(1)
    assert torch.equal(current[0, :, 2:14], tokens[0, :, 4:16][:, :12])
    torch.testing.assert_close(state[-1], torch.tensor([[0.0, 0.0, 0.0, 2.0, 0.0]]), atol=1e-5, rtol=0)
    assert torch.equal(m.realign(state)[-1], torch.tensor([[0.0, 0.0, 0.0, 2.0, 0.0]]))     # the position stays


def test_dropped_actions_are_ignored_and_kept_ones_are_not():
    m = _model()
    with torch.no_grad():                                      # FiLM starts at identity: give it weight
        for cell in m.cells:
            cell.film.weight.normal_()
    tokens, state = torch.randint(0, 64, (2, 16, 16)), m.init_state(2)
    a, b = torch.tensor([[1.0, 0.5, -1.0, 1.0]] * 2), torch.tensor([[-1.0, 0.0, 1.0, 0.0]] * 2)
    off = torch.zeros(2)
    assert torch.equal(m.step(tokens, a, state, present=off)[0], m.step(tokens, b, state, present=off)[0])
    assert not torch.allclose(m.step(tokens, a, state)[0], m.step(tokens, b, state)[0])


def test_guidance_one_is_the_plain_step_and_other_weights_extrapolate():
    """The live step's distribution: the model's own (boosted) log-probabilities at guidance 1; at
    another w, uncond + w·(cond − uncond) of the unboosted ones with the conditional branch's boost added
    once after (the unconditional branch's boost never enters), with the conditional branch's state."""
    m = _model()
    assert m.config.copy_bias
    tokens, state = torch.randint(0, 64, (2, 16, 16)), m.init_state(2)
    actions = torch.tensor([[0.3, -0.2, 0.0, 1.0], [-0.5, 0.1, 1.0, 0.0]])     # walking: a share of the boost
    noise = torch.rand(2, 16, 16)
    cfg = SamplingConfig(walk_boost=0.5)
    with torch.no_grad():
        plain = m.step(tokens, actions, state, boost=cfg.boosts)[0].movedim(1, -1)     # (B, h, w, K)
        cond = m.step(tokens, actions, state)[0].movedim(1, -1)
        uncond = m.step(tokens, actions, state, present=torch.zeros(2))[0].movedim(1, -1)
        mixture = m.step(tokens, actions, state, boost=cfg.boosts, parts=True)[0]
        _, lp, _ = live_step(m, tokens, actions, noise, state, cfg, logits=True)
        torch.testing.assert_close(lp, plain, rtol=0, atol=1e-5)
        guided = replace(cfg, guidance=2.0)
        codes, got, new_state = live_step(m, tokens, actions, noise, state, guided, logits=True)
    want = mixture.boosted(uncond + 2.0 * (cond - uncond))
    torch.testing.assert_close(got, want)
    proposals = mixture.candidates()
    boost_at = got.gather(-1, proposals) - (uncond + 2.0 * (cond - uncond)).gather(-1, proposals)
    torch.testing.assert_close(boost_at[..., 0], mixture.extra)                 # the conditional's boost, once
    torch.testing.assert_close(new_state[0], m.step(tokens, actions, state)[1][0])
    assert torch.equal(codes, sample_tokens(got.movedim(-1, 1), noise, guided))


def test_head_guidance_extrapolates_the_codes_and_keeps_the_copy_gate_and_proposals():
    """guide "head": the conditional branch's mixture with the head's log-softmax guided, uncond + w·(cond −
    uncond); its gate, proposals and boost are the conditional's, its draw is that mixture's (sample_mixture),
    and its state the conditional's; it is not the whole-distribution guide, which moves the copy mass too."""
    m = _model()
    with torch.no_grad():                                      # FiLM starts at identity: give it weight
        for cell in m.cells:
            cell.film.weight.normal_()
    tokens, state = torch.randint(0, 64, (2, 16, 16)), m.init_state(2)
    actions = torch.tensor([[0.3, -0.2, 0.0, 1.0], [-0.5, 0.1, 1.0, 0.0]])
    noise = torch.rand(2, 16, 16)
    cfg = SamplingConfig(walk_boost=0.5, guidance=1.5, guide="head")
    with torch.no_grad():
        cond, cond_state = m.step(tokens, actions, state, boost=cfg.boosts, parts=True)
        uncond = m.step(tokens, actions, state, present=torch.zeros(2), boost=cfg.boosts, parts=True)[0]
        codes, got, new_state = live_step(m, tokens, actions, noise, state, cfg, logits=True)
        lz_c, lz_u = cond.z.log_softmax(-1), uncond.z.log_softmax(-1)
        want = cond._replace(z=lz_u + 1.5 * (lz_c - lz_u))
        torch.testing.assert_close(got, want.log_probs())
        assert torch.equal(codes, sample_mixture(want, noise, cfg)[0])
        assert len(new_state) == len(cond_state)
        for a, b in zip(new_state, cond_state):
            torch.testing.assert_close(a, b)
        whole = live_step(m, tokens, actions, noise, state, replace(cfg, guide="all"), logits=True)[1]
        assert not torch.allclose(whole, got)
        # At w 1 both guides are the plain step.
        for guide in ("head", "all"):
            plain = live_step(m, tokens, actions, noise, state, replace(cfg, guidance=1.0, guide=guide), logits=True)[1]
            torch.testing.assert_close(plain, cond.log_probs())
    with pytest.raises(ValueError, match="guide"):
        SamplingConfig(guide="gate")


def test_sampling_follows_the_top_k_softmax_and_is_a_function_of_the_noise():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -5.0]).log_softmax(0)[None, :, None, None].expand(1, 5, 64, 64)
    cfg = SamplingConfig(temperature=1.0, top_k=3)
    u = torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))
    codes = sample_tokens(logits, u, cfg)
    assert torch.equal(codes, sample_tokens(logits, u.clone(), cfg))          # same noise, same codes
    freq = torch.bincount(codes.flatten(), minlength=5).float() / codes.numel()
    want = torch.zeros(5)
    want[:3] = torch.tensor([3.0, 2.0, 1.0]).softmax(0)                       # top-3 renormalised
    # 4096 draws: the standard error of a share p is sqrt(p(1-p)/4096) <= 0.008; allow 4 of them.
    torch.testing.assert_close(freq, want, atol=0.032, rtol=0)
    assert torch.equal(sample_tokens(logits, u, SamplingConfig.argmax()), torch.zeros(1, 64, 64, dtype=torch.long))


def test_min_p_never_draws_a_code_below_its_share_of_the_likeliest():
    """min-p: a code whose probability is under min_p x the position's likeliest is never drawn, whatever
    the noise; the rest keep their relative odds; min_p 0 is the whole distribution."""
    logits = torch.log(torch.tensor([0.50, 0.30, 0.15, 0.04, 0.01]))[None, :, None, None].expand(1, 5, 4, 4)
    u = torch.linspace(0, 0.999, 2000)
    draws = {}
    for min_p in (0.0, 0.1):
        cfg = SamplingConfig(min_p=min_p, copy_boost=0.0, fill_boost=0.0)
        codes = torch.cat([sample_tokens(logits.expand(len(u[i:i + 500]), 5, 4, 4), u[i:i + 500, None, None]
                                         .expand(-1, 4, 4), cfg)[:, 0, 0] for i in range(0, len(u), 500)])
        draws[min_p] = torch.bincount(codes, minlength=5).float() / len(codes)
    assert draws[0.0][3] > 0.03 and draws[0.0][4] > 0.005                  # the tail, drawn at its odds
    assert draws[0.1][3] == 0 and draws[0.1][4] == 0                       # 0.04 and 0.01 < 0.1 x 0.5
    kept = torch.tensor([0.50, 0.30, 0.15]) / 0.95
    assert torch.allclose(draws[0.1][:3], kept, atol=2e-3)
    with pytest.raises(ValueError, match="min_p"):
        SamplingConfig(min_p=1.0)


def test_the_live_step_is_deterministic_given_the_noise():
    m = _model()
    tokens, actions, state = torch.randint(0, 64, (2, 16, 16)), torch.rand(2, 4), m.init_state(2)
    u = torch.rand(2, 16, 16)
    with torch.no_grad():
        a, _, sa = live_step(m, tokens, actions, u, state, SamplingConfig())
        b, _, sb = live_step(m, tokens, actions, u, state, SamplingConfig())
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(sa, sb))


@pytest.mark.parametrize("pointer", [0, 1])
def test_rollout_loss_trains_every_parameter(pointer):
    m = _model(pointer=pointer)
    loss_fn = WorldLoss(m, WorldTrainConfig(window=6, unroll=2, batch=2), SamplingConfig())
    tokens, actions = torch.randint(0, 64, (2, 6, 16, 16)), torch.rand(2, 5, 4) * 2 - 1
    loss, logs = loss_fn(tokens, actions, 2)
    loss.backward()
    assert torch.isfinite(loss) and {"ce_teacher", "ce_unroll", "unroll_acc"} <= set(logs)
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_seed_v3_recipe_is_the_prototype():
    cfg, tcfg, sampling = recipe("seed-v3")
    assert (cfg.action_planes, cfg.warp, cfg.copy_bias) == (False, False, False)
    assert (tcfg.token_noise, tcfg.action_dropout, tcfg.unroll_feed) == (0.0, 0.0, "argmax")
    assert sampling.temperature == 0
    cfg, tcfg, sampling = recipe("ochre")
    assert cfg.warp and cfg.copy_bias and cfg.action_planes and tcfg.token_noise > 0 and sampling.temperature > 0
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe("nope")


def test_unroll_curriculum_grows_to_its_maximum():
    tcfg = WorldTrainConfig(window=12, unroll=4, curriculum=0.5)
    assert [unroll_at(p, tcfg) for p in (0.0, 0.25, 0.5, 0.9)] == [1, 3, 4, 4]


def test_two_level_inverse_cdf_draws_what_one_scan_draws():
    """Block totals, then the code inside the block: in exact arithmetic the same draw as one scan
    over all codes (checked in fp64, where rounding cannot move a draw), for odd shapes and for a
    distribution whose mass sits in a single block."""
    import ochre.models.sampling as sampling

    gen = torch.Generator().manual_seed(0)
    cfg = SamplingConfig(temperature=0.7)
    for K, peaked in ((3 * sampling.BLOCK, False), (5 * sampling.BLOCK, True)):
        logits = torch.randn(2, K, 3, 5, generator=gen, dtype=torch.float64) * 3              # (B, K, h, w)
        if peaked:
            logits[:, sampling.BLOCK:2 * sampling.BLOCK] += 30
        u = torch.rand(2, 3, 5, generator=gen, dtype=torch.float64)
        cdf = torch.softmax(logits / 0.7, dim=1).cumsum(dim=1)
        want = (cdf < u[:, None] * cdf[:, -1:]).sum(dim=1)                                 # one scan
        assert torch.equal(sampling.sample_tokens(logits, u, cfg), want)
    cdf = torch.softmax(logits[:, :7] / 0.7, dim=1).cumsum(dim=1)                            # fewer than 2 blocks
    assert torch.equal(sampling.sample_tokens(logits[:, :7], u, cfg), (cdf < u[:, None] * cdf[:, -1:]).sum(dim=1))


def test_logits_are_computed_channels_last():
    """Dynamics.step returns (B, K, h, w) as a view of (B, h, w, K) memory: every reduction over the
    codes runs along contiguous rows (the export's logits output is that memory, unpermuted)."""
    m = _model(shift_per_unit=1.0)
    logits, _ = m.step(torch.randint(0, 64, (2, 16, 16)), torch.zeros(2, 4), m.init_state(2))
    assert logits.shape == (2, 64, 16, 16) and logits.movedim(1, -1).is_contiguous()


def test_the_mixture_samples_from_its_factors_what_its_log_probabilities_draw():
    """sample_mixture draws from the copy mixture's factors (one exp pass, no (B, h, w, K) tensor)
    the code sample_tokens draws from Mixture.log_probs(): identical in fp64, where rounding cannot
    move a draw, with and without boosts, for gates near 0 and 1, a proposal that is also the head's
    best code, and an odd grid; its log-probabilities are log_probs()'s. Elsewhere (another
    temperature, top-k) it falls back to sample_tokens itself."""
    from ochre.models.dynamics import Mixture
    from ochre.models.sampling import BLOCK, sample_mixture

    gen = torch.Generator().manual_seed(0)
    B, h, w, K = 2, 3, 5, 4 * BLOCK
    for case in range(6):
        z = torch.randn(B, h, w, K, generator=gen, dtype=torch.float64) * 3
        codes = torch.randint(0, K, (B, h, w), generator=gen)
        gate = torch.randn(B, h, w, generator=gen, dtype=torch.float64) * 3 + (40, -30, 0, 0, 0, 0)[case]
        extra = None if case == 2 else torch.rand(B, h, w, generator=gen, dtype=torch.float64) * 9
        if case == 3:                                       # the proposal is the head's own favourite
            z.scatter_(-1, codes[..., None], z.amax(-1, keepdim=True) + 5)
        mixture = Mixture(z, codes, gate, extra)
        for _ in range(4):
            u = torch.rand(B, h, w, generator=gen, dtype=torch.float64)
            for cfg in (SamplingConfig(), SamplingConfig(temperature=0.7), SamplingConfig(top_k=8)):
                want = sample_tokens(mixture.log_probs().movedim(-1, 1), u, cfg)
                got, lp = sample_mixture(mixture, u, cfg, logits=True)
                assert torch.equal(got, want), (case, cfg)
                torch.testing.assert_close(lp, mixture.log_probs(), rtol=0, atol=1e-12)
    assert sample_mixture(mixture, u, SamplingConfig())[1] is None


def test_the_pointers_mixture_is_what_it_means_and_samples_from_its_factors():
    """With a learned pointer the gate's mass is shared by 9 proposals per position by their weights:
    log_probs() is log((1 - g) softmax(z) + g sum_n w_n onehot(c_n)) (checked dense, in fp64), with
    neighbours that propose the same code pooled (some duplicated, at some positions all nine), a
    decoding boost b scaling each code's probability by 1 - W + W e^b for its pooled weight W, and
    sample_mixture draws from its factors what sample_tokens draws from it, with and without boosts. Its
    log-probabilities agree to 1e-13: each is a sum of the same exponentials in another order (fp64)."""
    from ochre.models.dynamics import Mixture
    from ochre.models.sampling import BLOCK, sample_mixture

    gen = torch.Generator().manual_seed(0)
    B, h, w, K, n = 2, 3, 5, 4 * BLOCK, 9
    for case in range(4):
        z = torch.randn(B, h, w, K, generator=gen, dtype=torch.float64) * 3
        codes = torch.randint(0, K, (B, h, w, n), generator=gen)
        codes[..., 1], codes[..., 5] = codes[..., 0], codes[..., 4]
        if case == 3:
            codes[0] = codes[0, ..., :1]                     # one proposal nine times over
        gate = torch.randn(B, h, w, generator=gen, dtype=torch.float64) * 3
        weights = (torch.randn(B, h, w, n, generator=gen, dtype=torch.float64) * 2).log_softmax(dim=-1)
        extra = None if case == 0 else torch.rand(B, h, w, generator=gen, dtype=torch.float64) * 9
        mixture = Mixture(z, codes, gate, extra, weights)
        lp = mixture.log_probs()
        g = torch.sigmoid(gate)[..., None]
        pooled = torch.zeros_like(z).scatter_add(-1, codes, weights.exp())            # W per code, 0 unproposed
        dense = (1 - g) * z.softmax(dim=-1) + g * pooled
        if extra is not None:              # the boost b in expectation over the pointer's choice: 1 - W + W e^b
            dense = dense * (1 + (extra.exp()[..., None] - 1) * pooled)
        torch.testing.assert_close(lp.exp(), dense, rtol=1e-12, atol=1e-15)
        for _ in range(4):
            u = torch.rand(B, h, w, generator=gen, dtype=torch.float64)
            for cfg in (SamplingConfig(), SamplingConfig(temperature=0.7), SamplingConfig(top_k=8)):
                got, got_lp = sample_mixture(mixture, u, cfg, logits=True)
                assert torch.equal(got, sample_tokens(lp.movedim(-1, 1), u, cfg)), (case, cfg)
                torch.testing.assert_close(got_lp, lp, rtol=0, atol=1e-13)


def test_a_pointer_on_its_middle_proposal_decodes_as_the_single_proposal():
    """All the pointer's weight on the middle proposal: the boosted distribution is the single proposal's,
    the neighbours' codes keep the head's own mass. (The boost added to every proposal multiplied the
    head's mass at each neighbour's code by e^b: a 3x3 neighbourhood shuffled into the dream.)"""
    from ochre.models.dynamics import Mixture

    gen = torch.Generator().manual_seed(1)
    B, h, w, K, n = 2, 3, 4, 64, 9
    z = torch.randn(B, h, w, K, generator=gen, dtype=torch.float64) * 3
    codes = torch.randint(0, K, (B, h, w, n), generator=gen)
    gate = torch.randn(B, h, w, generator=gen, dtype=torch.float64) * 3
    extra = torch.full((B, h, w), 15.0, dtype=torch.float64)
    weights = torch.full((B, h, w, n), -200.0, dtype=torch.float64)
    weights[..., n // 2] = 0.0
    single = Mixture(z, codes[..., n // 2], gate, extra).log_probs()
    torch.testing.assert_close(Mixture(z, codes, gate, extra, weights).log_probs(), single, rtol=0, atol=1e-12)


def test_the_pointers_proposals_are_the_neighbourhood_of_the_priors_source():
    """Standing still with no view owed, the prior's source is the position itself: the pointer's 9
    proposals are the codes at offsets [-1, 1]^2 (row-major), rows clamped at the edges and columns
    wrapped, as the prior's own sources are; a new pointer puts POINTER_START on the middle one."""
    from ochre.models.dynamics import POINTER_START

    m = _model(pointer=1)
    tokens = torch.randint(0, 64, (2, 16, 16))
    mixture, _ = m.step(tokens, torch.zeros(2, 4), m.init_state(2), parts=True)
    assert mixture.codes.shape == (2, 16, 16, 9) and mixture.weights.shape == (2, 16, 16, 9)
    for k, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        rows = (torch.arange(16) + dy).clamp(0, 15)
        cols = torch.remainder(torch.arange(16) + dx, 16)
        assert torch.equal(mixture.codes[..., k], tokens[:, rows][:, :, cols]), (dy, dx)
    torch.testing.assert_close(mixture.weights.exp()[..., 4], torch.full((2, 16, 16), POINTER_START))
    still = _model(pointer=1, warp=False)                                    # no motion prior: the same neighbourhood
    assert torch.equal(still.step(tokens, torch.zeros(2, 4), still.init_state(2), parts=True)[0].codes, mixture.codes)


def test_the_pointers_middle_proposal_is_the_priors_and_its_neighbours_are_looked_up_alike():
    """Turning and walking with a view owed and a panorama that remembers: the pointer model's middle
    proposal and kind are the prior's own (a model without a pointer, the same weights), and off the
    edges, under a whole-token shift, the neighbour at (dy, dx) is the proposal of position (y+dy, x+dx)."""
    base, ptr = _model(), _model(pointer=1)
    ptr.load_state_dict(base.state_dict(), strict=False)
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (3, 16, 16), generator=gen)
    state = base.init_state(3)
    for t in range(4):                                                     # fill the panorama, owe a view
        act = base.with_flag(torch.tensor([[0.7, 0.2, 0.0, 0.0], [-1.0, 0.0, 0.0, 1.0], [0.3, -0.4, 1.0, 0.0]]))
        want, want_kind, *_ = base.proposals(tokens, act, state[-1], state[-2])
        got, got_kind, *_ = ptr._copy_codes(tokens, ptr._motion(act), state[-1], state[-2],
                                            act[:, 2:4].abs().amax(dim=1) > 0, radius=1)
        assert torch.equal(got[..., 4], want) and torch.equal(got_kind, want_kind), t
        assert (want_kind != 0).any() or t == 0
        _, state = base.step(tokens, act[:, :4], state)
        tokens = torch.randint(0, 64, (3, 16, 16), generator=gen)
    act = base.with_flag(torch.tensor([[0.7, 0.0, 0.0, 0.0]] * 3))
    view = torch.zeros_like(state[-1])
    want, *_ = base.proposals(tokens, act, view)
    got, *_ = ptr._copy_codes(tokens, ptr._motion(act), view, None, None, radius=1)
    for k, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
        assert torch.equal(got[:, 2:14, 2:10, k], want[:, 2 + dy:14 + dy, 2 + dx:10 + dx]), (dy, dx)


def test_the_pointers_gradients_are_the_dense_mixtures():
    """The loss's gradients through log_probs() with repeated proposals (neighbours often propose the same
    code) are those of the dense mixture (1 - g) softmax(z) + g sum_n w_n onehot(c_n), for z, the gate and
    the pointer's weights (fp64: the two differ by rounding only)."""
    from ochre.models.dynamics import Mixture

    gen = torch.Generator().manual_seed(1)
    B, h, w, K, n = 2, 3, 4, 16, 9
    codes = torch.randint(0, 5, (B, h, w, n), generator=gen)                 # 5 codes for 9 proposals: repeats
    target = torch.randint(0, 8, (B, h, w), generator=gen)
    leaves = [torch.randn(B, h, w, K, generator=gen, dtype=torch.float64).requires_grad_(),
              torch.randn(B, h, w, generator=gen, dtype=torch.float64).requires_grad_(),
              torch.randn(B, h, w, n, generator=gen, dtype=torch.float64).requires_grad_()]

    def grads(dense: bool):
        z, gate, logits = leaves
        weights = logits.log_softmax(dim=-1)
        if dense:
            g = torch.sigmoid(gate)[..., None]
            lp = ((1 - g) * z.softmax(dim=-1) + g * torch.zeros_like(z).scatter_add(-1, codes, weights.exp())).log()
        else:
            lp = Mixture(z, codes, gate, None, weights).log_probs()
        return torch.autograd.grad(-lp.gather(-1, target[..., None]).sum(), leaves)

    for got, want in zip(grads(False), grads(True)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="pointer"):
        DynamicsConfig(**SMALL, pointer=1, copy_bias=False)


@pytest.mark.parametrize("pointer", [0, 1])
def test_the_live_step_draws_the_same_codes_eager_and_compiled(pointer):
    """The live step traced by a compiler gives the codes, log-probabilities and state of the eager
    one on a real step (fp64), with and without a learned pointer. Dynamo's own backend runs the trace
    with eager kernels: Inductor's code for it is the export tests' (test_native, test_export)."""
    m = _model(codebook_size=2 * 64, pointer=pointer).double().eval()
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 128, (2, 16, 16), generator=gen)
    actions = torch.rand(2, 4, generator=gen, dtype=torch.float64) * 2 - 1
    noise = torch.rand(2, 16, 16, generator=gen, dtype=torch.float64)
    state = [torch.randn(2, *s, generator=gen, dtype=torch.float64) for s in m.state_shapes()]
    cfg = SamplingConfig()

    def step(*args):
        return live_step(m, *args, cfg, logits=True)

    with torch.no_grad():
        want = step(tokens, actions, noise, state)
        got = torch.compile(step, backend="eager", fullgraph=True, dynamic=False)(tokens, actions, noise, state)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-9)
    for a, b in zip(got[2], want[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
