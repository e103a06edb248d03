"""VQ-VAE tokenizer: 64×64 RGB frames <-> 16×16 grids of codes from a K-entry codebook.

Legend: B batch, C channels, H W pixels (64), h w token grid (16), D code dim, K codebook size, N = B·h·w.

Training contract, each step (1 may be compiled, fullgraph, with its backward; 3 is always eager):
    1. loss, logs = model.compute_loss(frames)   # pure: reads the codebook, mutates nothing
    2. loss.backward(); optimizer.step()
    3. logs = model.update_codebook(logs)        # @no_grad: EMA + dead-code restarts; all-reduces
                                                 # under torch.distributed; strips the "vq/" stats
    4. log `logs` (scalar detached tensors) at the log interval; `.item()` only there
The codebook is not a parameter (the optimizer never sees it): it is an EMA of the encoder
outputs assigned to each code, held in buffers that checkpoints save with the weights.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import ochre.kernels as kernels

_STATS = ("vq/counts", "vq/sums", "vq/z")  # logs keys that carry codebook statistics, not metrics


@dataclass
class TokenizerConfig:
    channels: tuple[int, int, int] = (64, 128, 256)  # widths at 64², 32², 16²
    blocks: tuple[int, int, int] = (1, 2, 2)  # residual blocks at each resolution
    code_dim: int = 64  # D
    codebook_size: int = 2048  # K
    commit_beta: float = 0.25  # weight of ‖z − sg(zq)‖²
    grad_weight: float = 0.0  # weight of the image-gradient term |∇recon − ∇x| (edges; see compute_loss)
    ema_decay: float = 0.99
    ema_eps: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    dead_ratio: float = 0.03  # a code is dead below this fraction of the mean EMA usage
    restart_seed: int = 0  # dead-code restart picks are a hash of (seed, update count)
    impl: str = "auto"  # "auto" | "triton" | "torch": which ochre.kernels implementation to call
    # The decoder's residual blocks at 64², 32², 16² where they differ from the encoder's (`blocks`):
    # a decoder refined deeper than its tokenizer (`grow_decoder`). None: as `blocks`.
    decoder_blocks: tuple[int, int, int] | None = None

    def __post_init__(self):
        self.channels, self.blocks = tuple(self.channels), tuple(self.blocks)  # lists from JSON
        if self.decoder_blocks is not None:
            self.decoder_blocks = tuple(self.decoder_blocks)
        if len(self.channels) != 3 or len(self.blocks) != 3 or len(self.decoder_blocks or self.blocks) != 3:
            raise ValueError(f"channels and blocks need 3 entries (64², 32², 16²), got {self.channels}, "
                             f"{self.blocks}, decoder {self.decoder_blocks}")
        if min(self.decoder_blocks or self.blocks) < 0:
            raise ValueError(f"decoder_blocks must be >= 0, got {self.decoder_blocks}")
        if min(self.channels) < 1 or min(self.blocks) < 0 or self.code_dim < 1 or self.codebook_size < 2:
            raise ValueError(f"sizes must be positive: {self}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.ema_eps <= 0 or self.commit_beta < 0 or not 0.0 <= self.dead_ratio < 1.0:
            raise ValueError("need ema_eps > 0, commit_beta >= 0 and 0 <= dead_ratio < 1")
        if self.impl not in ("auto", "triton", "torch"):
            raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {self.impl!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> TokenizerConfig:
        presets = {
            # CPU demos and tests: thin at full resolution, where a conv costs 16× more than at 16².
            # 0.58M params; ~92 frames/s training at batch 32 on a 2-core CPU (eager); 2000 steps
            # of `ochre train-tokenizer` on `ochre synth` data: 27.3 dB held-out, 98 % of codes used.
            # (16, 32, 64) (0.27M) is cheaper but was 0.3 dB lower after 1000 equal steps.
            "tiny": dict(channels=(16, 48, 96), blocks=(0, 1, 2), code_dim=32),
            # The shipped model's: twice tiny's width at full resolution, where blur starts, with an
            # edge term; about 3x tiny's decode cost, inside the live budget (README, live table).
            "small": dict(channels=(32, 64, 128), blocks=(1, 1, 2), code_dim=32, grad_weight=0.5),
            "base": dict(),  # the dataclass defaults: the GPU model
        }
        if name not in presets:
            raise ValueError(f"unknown tokenizer preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass
class TokenizerTrainConfig:
    """Defaults for `ochre train-tokenizer` (the CLI overrides steps/batch/lr)."""

    steps: int = 2000
    batch: int = 32
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # Refining a decoder only (--decoder-of): weight of a patch discriminator's hinge loss, relative to
    # the reconstruction term's pull on the decoder's last layer (ochre.models.discriminator); 0: off.
    # For its first disc_warmup steps the discriminator trains alone, so the decoder's first adversarial
    # gradients come from one that already tells its frames from real ones.
    adversarial: float = 0.0
    disc_warmup: int = 500
    disc_lr: float = 2e-4

    def __post_init__(self):
        if self.adversarial < 0 or self.disc_warmup < 0 or self.disc_lr <= 0:
            raise ValueError(f"need adversarial >= 0, disc_warmup >= 0 and disc_lr > 0: {self}")

    @classmethod
    def preset(cls, name: str, **overrides) -> TokenizerTrainConfig:
        presets = {"tiny": dict(), "small": dict(steps=20000, warmup=500),
                   "base": dict(steps=20000, batch=128, lr=1e-3, warmup=500)}
        if name not in presets:
            raise ValueError(f"unknown tokenizer preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


@dataclass
class TokenizerOutput:
    recon: torch.Tensor  # (B, 3, H, W) float in [-1, 1] space (unclamped while training)
    codes: torch.Tensor  # (B, h, w) int64
    z: torch.Tensor  # (B, D, h, w) encoder output
    zq: torch.Tensor  # (B, D, h, w) straight-through quantised z (value = codebook rows)


class ResBlock(nn.Module):
    # No normalisation layers: batch-independent (DDP, batch-1 encode) and cheap on a CPU;
    # the 1×1 output conv starts at zero so every block begins as the identity.
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x):
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _stage(c: int, n: int) -> list[nn.Module]:
    return [ResBlock(c) for _ in range(n)]


class Tokenizer(nn.Module):
    kind = "tokenizer"  # recorded in checkpoints; `load_tokenizer` checks it

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = cfg = config
        c0, c1, c2 = cfg.channels
        n0, n1, n2 = cfg.blocks
        d0, d1, d2 = cfg.decoder_blocks or cfg.blocks
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c0, 3, padding=1), *_stage(c0, n0),
            nn.Conv2d(c0, c1, 4, stride=2, padding=1), *_stage(c1, n1),  # 64² -> 32²
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), *_stage(c2, n2),  # 32² -> 16²
            nn.SiLU(), nn.Conv2d(c2, cfg.code_dim, 1),
        )
        # Nearest upsampling + 3×3 conv instead of transposed convs: no checkerboard artefacts.
        self.decoder = nn.Sequential(
            nn.Conv2d(cfg.code_dim, c2, 3, padding=1), *_stage(c2, d2),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c1, 3, padding=1), *_stage(c1, d1),
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c1, c0, 3, padding=1), *_stage(c0, d0),
            nn.SiLU(), nn.Conv2d(c0, 3, 3, padding=1),
        )
        K, D = cfg.codebook_size, cfg.code_dim
        # EMA codebook state. ema_count starts at 0, so the first update_codebook() finds every
        # code dead and restarts it on a real encoder output: a data-dependent init for free.
        self.register_buffer("codebook", torch.randn(K, D) / math.sqrt(D))
        self.register_buffer("ema_count", torch.zeros(K))
        self.register_buffer("ema_sum", torch.zeros(K, D))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        (self._nearest, self._nearest_kw), (self._lookup, self._lookup_kw) = _kernels(cfg.impl)

    # -- quantiser -------------------------------------------------------------------------
    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, D, h, w) -> codes (B, h, w) int64, zq (B, D, h, w) straight-through."""
        B, D, h, w = z.shape
        flat = z.float().permute(0, 2, 3, 1).reshape(B * h * w, D)  # (N, D)
        codes = self._nearest(flat, self.codebook, **self._nearest_kw).view(B, h, w)  # (B, h, w)
        zq = self._lookup(codes, self.codebook, **self._lookup_kw).permute(0, 3, 1, 2)  # (B, D, h, w)
        # Straight-through: the forward value is zq, the gradient flows to z unchanged.
        return codes, z + (zq - z).detach()

    # -- public API --------------------------------------------------------------------------
    @staticmethod
    def normalize(frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> float (B, 3, H, W) in [-1, 1]."""
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 (B, 3, 64, 64), got {frames.dtype}")
        return frames.float() / 127.5 - 1.0

    def forward(self, frames: torch.Tensor) -> TokenizerOutput:
        z = self.encoder(self.normalize(frames))  # (B, D, h, w)
        codes, zq = self.quantize(z)
        return TokenizerOutput(recon=self.decoder(zq), codes=codes, z=z, zq=zq)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, 64, 64) -> codes (B, 16, 16) int64."""
        return self.quantize(self.encoder(self.normalize(frames)))[0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, as_uint8: bool = False) -> torch.Tensor:
        """codes (B, h, w) int (token shards hold uint16) -> frames (B, 3, H, W): float in [0, 1],
        or uint8 with as_uint8."""
        zq = self._lookup(codes.long(), self.codebook, **self._lookup_kw)  # (B, h, w, D)
        zq = zq.permute(0, 3, 1, 2)  # (B, D, h, w)
        x = (self.decoder(zq).float().clamp(-1, 1) + 1) * 0.5  # (B, 3, H, W) in [0, 1]
        return x.mul(255).round().to(torch.uint8) if as_uint8 else x

    def codes_digest(self) -> str:
        """16 hex digits naming what decides the codes: the encoder's weights and the codebook. Two
        tokenizers with one digest encode every frame alike, whatever their decoders (a decoder refined
        by `ochre train-tokenizer --decoder-of` keeps its tokenizer's digest)."""
        h = hashlib.sha256()
        parts = [(f"encoder.{k}", v) for k, v in sorted(self.encoder.state_dict().items())]
        for name, t in parts + [("codebook", self.codebook)]:
            h.update(name.encode())
            h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def freeze_codes(self) -> list[nn.Parameter]:
        """Fix the encoder (the codebook is never a parameter), so training changes only the decoder;
        returns the decoder's parameters, the ones left to train."""
        self.encoder.requires_grad_(False)
        return list(self.decoder.parameters())

    def compute_loss(self, batch, with_recon: bool = False) -> tuple:
        """batch: uint8 frames (B, 3, 64, 64) or {"frames": ...}. Returns (loss, logs), and with_recon the
        reconstruction (B, 3, H, W) in [-1, 1] space, in the graph (for an adversarial term) as a third.

        Pure (no buffer mutation), so it compiles with fullgraph=True. logs holds detached scalars
        (`recon_loss`, `commit_loss`, `psnr`, `codebook_usage`, `perplexity`) and, for
        `update_codebook`, the batch statistics `vq/counts` (K,), `vq/sums` (K, D), `vq/z` (N, D).
        """
        frames = batch["frames"] if isinstance(batch, dict) else batch
        x = self.normalize(frames)  # (B, 3, H, W)
        out = self(frames)
        # MSE: PSNR is −10·log10(MSE), so this optimises the reported metric itself. MSE alone
        # favours blur where the code cannot tell (it averages the candidates); the gradient term
        # (grad_weight) asks for the edges the frame has, which recon_grad_ratio measures.
        recon_loss = F.mse_loss(out.recon.float(), x)
        z = out.z.float()
        commit_loss = F.mse_loss(z, out.zq.detach().float())
        loss = recon_loss + self.config.commit_beta * commit_loss
        if self.config.grad_weight:
            loss = loss + self.config.grad_weight * _grad_loss(out.recon.float(), x)

        with torch.no_grad():
            K, D = self.codebook.shape
            flat_codes = out.codes.reshape(-1)  # (N,)
            flat_z = z.detach().permute(0, 2, 3, 1).reshape(-1, D)  # (N, D)
            # scatter/index_add instead of bincount: fixed output shape, so compile keeps it.
            counts = torch.zeros(K, device=z.device).index_add_(0, flat_codes, torch.ones_like(flat_codes,
                                                                                       dtype=torch.float))
            sums = torch.zeros(K, D, device=z.device).index_add_(0, flat_codes, flat_z)
            p = counts / flat_codes.numel()
            perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
            # PSNR per image on the [0, 1] scale, then averaged over the batch.
            err = ((out.recon.detach().float().clamp(-1, 1) - x) * 0.5).square().mean(dim=(1, 2, 3))
            psnr = (-10.0 * torch.log10(err.clamp_min(1e-10))).mean()
        logs = {
            "recon_loss": recon_loss.detach(), "commit_loss": commit_loss.detach(), "psnr": psnr,
            "codebook_usage": (counts > 0).float().mean(), "perplexity": perplexity,
            "vq/counts": counts, "vq/sums": sums, "vq/z": flat_z,
        }
        return (loss, logs, out.recon) if with_recon else (loss, logs)

    @torch.compiler.disable
    @torch.no_grad()
    def update_codebook(self, logs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """EMA codebook update + dead-code restarts from `compute_loss` logs; returns the logs
        without the `vq/` statistics, plus `dead_codes` (how many codes were restarted).

        Eager only (excluded from compile). Under torch.distributed every rank must call it each
        step: counts and sums are all-reduced and restart vectors are broadcast from rank 0, so
        the codebook stays identical on every rank. Deterministic and sync-free: restart picks hash
        (restart_seed, update count) on the device and never touch the global RNG.
        """
        distributed = dist.is_available() and dist.is_initialized()
        # Copies: the all-reduces below work in place and must not alter the caller's logs.
        counts, sums, z = (logs[k].float().clone() if distributed else logs[k].float() for k in _STATS)
        if distributed:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        decay, eps = self.config.ema_decay, self.config.ema_eps
        self.ema_count.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
        K = self.ema_count.numel()
        n = self.ema_count.sum()
        # Laplace smoothing keeps rarely used codes from dividing by ~0.
        size = (self.ema_count + eps) / (n + K * eps) * n  # (K,)
        self.codebook.copy_(self.ema_sum / size[:, None])

        # Dead codes: EMA usage below dead_ratio × mean usage. The mean sets the scale, so the
        # rule holds for any batch size or world size. Each restart takes a random encoder output
        # of the batch (frequent clusters get split) and gets the mean usage as a grace period:
        # it must stay unused ~350 updates (0.99^350 ≈ 0.03) before it is restarted again.
        mean = n / K
        dead = self.ema_count < self.config.dead_ratio * mean  # (K,)
        fresh = z[_hash_index(self.updates, self.config.restart_seed, K, z.shape[0])]  # (K, D)
        if distributed:
            dist.broadcast(fresh, src=0)
        self.codebook.copy_(torch.where(dead[:, None], fresh, self.codebook))
        self.ema_count.copy_(torch.where(dead, mean, self.ema_count))
        self.ema_sum.copy_(torch.where(dead[:, None], fresh * mean, self.ema_sum))
        self.updates.add_(1)
        out = {k: v for k, v in logs.items() if k not in _STATS}
        out["dead_codes"] = dead.sum()
        return out


def _decoder_roles(blocks) -> list[str]:
    """What each layer of the decoder built with `blocks` (64², 32², 16²) is, in order."""
    n0, n1, n2 = blocks
    return (["in", *(f"block16.{i}" for i in range(n2)), "up32", "conv32", *(f"block32.{i}" for i in range(n1)),
             "up64", "conv64", *(f"block64.{i}" for i in range(n0)), "act", "out"])


def grow_decoder(model: Tokenizer, source: Tokenizer) -> None:
    """Copy `source`'s weights into `model`, whose decoder may hold more residual blocks at each
    resolution (`decoder_blocks`); the added blocks keep their initialisation, the identity (ResBlock),
    so `model` decodes exactly as `source` until it is trained. Everything else must match."""
    old_cfg, new_cfg = source.config, model.config
    same = {k: v for k, v in vars(new_cfg).items() if k not in ("decoder_blocks", "impl")}
    if same != {k: v for k, v in vars(old_cfg).items() if k not in ("decoder_blocks", "impl")}:
        raise ValueError("grow_decoder: the tokenizers differ beyond their decoders' blocks")
    old = _decoder_roles(old_cfg.decoder_blocks or old_cfg.blocks)
    new = _decoder_roles(new_cfg.decoder_blocks or new_cfg.blocks)
    if not set(old) <= set(new):
        raise ValueError(f"grow_decoder: {new_cfg.decoder_blocks} has fewer blocks than "
                         f"{old_cfg.decoder_blocks or old_cfg.blocks}")
    state = model.state_dict()
    for key, value in source.state_dict().items():
        if key.startswith("decoder."):
            _, i, rest = key.split(".", 2)
            key = f"decoder.{new.index(old[int(i)])}.{rest}"
        state[key] = value
    model.load_state_dict(state, strict=True)


def _grad_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean |∂y − ∂x| over both image axes: (B, C, H, W) pairs -> scalar."""
    return ((y.diff(dim=-1) - x.diff(dim=-1)).abs().mean() + (y.diff(dim=-2) - x.diff(dim=-2)).abs().mean()) / 2


def _hash_index(counter: torch.Tensor, seed: int, k: int, n: int) -> torch.Tensor:
    """k pseudo-random indices in [0, n) from a device counter: deterministic on any device and
    no host sync (a torch.Generator would need the counter as a Python int every step)."""
    x = (counter * k + torch.arange(k, device=counter.device) + seed * 0x9E3779B1) & 0xFFFFFFFF  # (k,)
    for _ in range(2):  # lowbias32 rounds; products stay < 2^59, no int64 overflow
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return (x ^ (x >> 16)) % n


def _kernels(impl: str):
    """((nearest_code, kwargs), (codebook_lookup, kwargs)) of ochre.kernels for `impl`."""
    if impl == "torch":  # the reference is the spec; always present
        return (kernels.nearest_code_ref, {}), (kernels.codebook_lookup_ref, {})
    picked = []
    for fn in (kernels.nearest_code, kernels.codebook_lookup):
        takes_impl = "impl" in inspect.signature(fn).parameters
        if impl == "triton" and not takes_impl:
            raise ValueError(f"impl='triton' asked for, but ochre.kernels.{fn.__name__} has no impl "
                             "switch in this build; use impl='auto'")
        picked.append((fn, {"impl": impl} if takes_impl else {}))
    return tuple(picked)
