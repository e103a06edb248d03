"""VQ-VAE tokenizer: shapes, config validation, straight-through gradients, codebook upkeep,
a short optimisation, and torch.compile(fullgraph=True) parity with eager."""

from __future__ import annotations

import pytest
import torch

from ochre.models import Tokenizer, TokenizerConfig, TokenizerTrainConfig
from ochre.models.tokenizer import _hash_index

# Smaller than the tiny preset so each test takes a second or two on a 2-core CPU.
SMALL = dict(channels=(8, 16, 32), blocks=(0, 1, 1), code_dim=8, codebook_size=64)


def blocky_frames(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, 64, 64): 8×8-pixel 'blocks' of a few base colours with per-pixel texture,
    a sky band on top: the structure of the synthetic world, cheap to make."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[95, 159, 53], [134, 96, 67], [125, 125, 125], [219, 207, 163], [50, 90, 200.]])
    ids = torch.randint(0, len(palette), (n, 8, 8), generator=g)
    img = palette[ids].permute(0, 3, 1, 2).repeat_interleave(8, 2).repeat_interleave(8, 3)  # (n, 3, 64, 64)
    img = img * (1 + 0.1 * torch.randn(n, 1, 64, 64, generator=g))
    img[:, :, :16] = torch.tensor([150, 190, 255.])[:, None, None]
    return img.clamp(0, 255).to(torch.uint8)


def make(seed: int = 0, **overrides) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(TokenizerConfig(**{**SMALL, **overrides}))


def test_shapes_and_dtypes():
    model = make().eval()
    frames = blocky_frames(2)
    codes = model.encode(frames)
    assert codes.shape == (2, 16, 16) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 64
    x = model.decode(codes)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert model.decode(codes, as_uint8=True).dtype == torch.uint8
    out = model(frames)
    assert out.recon.shape == (2, 3, 64, 64)
    assert out.z.shape == out.zq.shape == (2, 8, 16, 16)
    assert torch.equal(out.codes, codes)
    # zq holds the codebook rows of the codes (straight-through changes gradients, not values).
    assert torch.allclose(out.zq, model.codebook[codes].permute(0, 3, 1, 2), atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        model.encode(frames.float())


def test_presets_and_validation():
    tiny = Tokenizer(TokenizerConfig.preset("tiny"))
    base = Tokenizer(TokenizerConfig.preset("base"))
    n_tiny = sum(p.numel() for p in tiny.parameters())
    n_base = sum(p.numel() for p in base.parameters())
    assert 2e5 <= n_tiny <= 1e6, n_tiny
    assert 2e6 <= n_base <= 2e7, n_base
    assert tiny.codebook.shape == (2048, 32) and base.codebook.shape == (2048, 64)
    assert TokenizerConfig.preset("tiny", code_dim=16).code_dim == 16
    assert TokenizerTrainConfig.preset("tiny").batch == 32
    # JSON round trip of a config turns tuples into lists; they come back as tuples.
    assert TokenizerConfig(channels=[8, 16, 32]).channels == (8, 16, 32)
    for bad in [dict(channels=(8, 16)), dict(code_dim=0), dict(codebook_size=1), dict(ema_decay=1.0),
                dict(dead_ratio=1.5), dict(impl="cuda"), dict(blocks=(0, -1, 1))]:
        with pytest.raises(ValueError):
            TokenizerConfig(**bad)
    with pytest.raises(ValueError, match="preset"):
        TokenizerConfig.preset("huge")


def test_straight_through_gradient_reaches_encoder():
    model = make()
    out = model(blocky_frames(2))
    # Reconstruction alone (no commitment term): only the straight-through path links it to z.
    recon = out.recon.square().mean()
    recon.backward()
    stem = model.encoder[0].weight.grad
    assert stem is not None and float(stem.abs().sum()) > 0
    assert model.codebook.grad is None  # the codebook learns by EMA, not by gradient


def test_ema_moves_used_codes_toward_their_vectors():
    model = make(codebook_size=8, code_dim=4, dead_ratio=0.0)
    model.ema_count.fill_(10.0)
    model.ema_sum.copy_(model.codebook * 10.0)
    before = model.codebook.clone()
    target = torch.full((4,), 3.0)
    z = target.repeat(5, 1)  # five vectors, all assigned to code 2
    counts = torch.zeros(8).index_add_(0, torch.full((5,), 2), torch.ones(5))
    sums = torch.zeros(8, 4).index_add_(0, torch.full((5,), 2), z)
    logs = model.update_codebook({"psnr": torch.tensor(1.0), "vq/counts": counts, "vq/sums": sums, "vq/z": z})
    assert set(logs) == {"psnr", "dead_codes"} and int(logs["dead_codes"]) == 0
    assert (model.codebook[2] - target).norm() < (before[2] - target).norm()
    others = [0, 1, 3, 4, 5, 6, 7]
    # Unused codes keep their value up to the Laplace smoothing (relative change ~1e-3).
    assert torch.allclose(model.codebook[others], before[others], rtol=1e-2, atol=1e-4)
    assert int(model.updates) == 1


def test_dead_code_restart_raises_usage():
    model = make()
    frames = blocky_frames(4)
    _, logs = model.compute_loss(frames)
    used_before = float(logs["codebook_usage"])
    logs = model.update_codebook(logs)
    # Fresh model: ema_count starts at 0, so every code the batch did not use is restarted.
    assert int(logs["dead_codes"]) == round((1 - used_before) * 64)
    _, logs = model.compute_loss(frames)
    assert float(logs["codebook_usage"]) > used_before + 0.2, (used_before, float(logs["codebook_usage"]))
    # Restarted codes are real encoder outputs of the batch.
    z = logs["vq/z"]
    d = torch.cdist(model.codebook, z).min(dim=1).values
    assert float(d.median()) < 1e-5


def test_hash_index_is_deterministic_and_spread():
    a = _hash_index(torch.tensor(7), 0, 2048, 1000)
    assert torch.equal(a, _hash_index(torch.tensor(7), 0, 2048, 1000))
    assert int(a.min()) >= 0 and int(a.max()) < 1000
    assert a.unique().numel() > 800  # ~1 − e^−2.048 ≈ 87 % of 1000 for uniform draws
    assert not torch.equal(a, _hash_index(torch.tensor(8), 0, 2048, 1000))
    assert not torch.equal(a, _hash_index(torch.tensor(7), 1, 2048, 1000))


def test_short_training_reduces_loss():
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    frames = blocky_frames(8)
    first = None
    for _ in range(60):
        loss, logs = model.compute_loss({"frames": frames})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logs = model.update_codebook(logs)
        first = first or {k: float(logs[k]) for k in ("recon_loss", "psnr")}
    _, logs = model.compute_loss(frames)
    # Measured: recon 0.268 -> 0.065 (4.1x), PSNR 11.8 -> 17.9 dB; asserted with room to spare.
    assert float(logs["recon_loss"]) < 0.4 * first["recon_loss"], (first, float(logs["recon_loss"]))
    assert float(logs["psnr"]) > first["psnr"] + 3.0, (first, float(logs["psnr"]))
    assert float(logs["codebook_usage"]) > 0.5


def test_compile_fullgraph_matches_eager():
    model = make()
    frames = blocky_frames(2)
    model.update_codebook(model.compute_loss(frames)[1])  # data-initialised codebook: no near-ties
    compiled = torch.compile(model.compute_loss, fullgraph=True)
    loss_c, logs_c = compiled(frames)
    loss_c.backward()
    grad_c = model.encoder[0].weight.grad.clone()
    model.zero_grad(set_to_none=True)
    loss_e, logs_e = model.compute_loss(frames)
    loss_e.backward()
    grad_e = model.encoder[0].weight.grad
    # Inductor reorders fp32 reductions and fuses pointwise ops: ~1e-6 relative differences in z,
    # far below the distance gaps of this codebook, so the codes agree exactly and losses/grads
    # to well under 1e-3 relative (a wrong graph would differ at O(1)).
    assert torch.equal(logs_c["vq/counts"], logs_e["vq/counts"])
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logs_c["psnr"], logs_e["psnr"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(grad_c, grad_e, rtol=1e-3, atol=1e-6)


def test_a_grown_decoder_decodes_as_its_source_until_trained():
    """grow_decoder: more residual blocks at each resolution, the source's weights moved to their
    layers, the added blocks the identity: the same frames from the same codes, and the same codes."""
    from ochre.models.tokenizer import grow_decoder

    torch.manual_seed(0)
    cfg = TokenizerConfig(channels=(8, 16, 16), blocks=(0, 1, 1), code_dim=8, codebook_size=64)
    source = Tokenizer(cfg).eval()
    for p in source.decoder.parameters():          # no zero-initialised layer left: every move is seen
        p.data.normal_(0, 0.1)
    grown = Tokenizer(TokenizerConfig(**{**vars(cfg), "decoder_blocks": (1, 2, 3)})).eval()
    assert len(grown.decoder) == len(source.decoder) + 4
    grow_decoder(grown, source)
    frames = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    codes = source.encode(frames)
    assert torch.equal(grown.encode(frames), codes) and grown.codes_digest() == source.codes_digest()
    torch.testing.assert_close(grown.decode(codes), source.decode(codes), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="fewer blocks"):
        grow_decoder(source, grown)
    with pytest.raises(ValueError, match="beyond their decoders"):
        grow_decoder(Tokenizer(TokenizerConfig(**{**vars(cfg), "code_dim": 4})), source)
    with pytest.raises(ValueError, match="decoder_blocks must be >= 0"):
        TokenizerConfig(**{**vars(cfg), "decoder_blocks": (0, -1, 1)})
