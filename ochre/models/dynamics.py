"""Dynamics model: FiLM-conditioned ConvGRU over the tokenizer's 16×16 code grid.

Legend: B batch, T time, K codebook size, E token embedding dim, C state channels per layer,
h w token grid (16×16), A = 4 actions [yaw, pitch, move_x, move_z] (DESIGN §3.2).

One step reads the tokens of frame t and the action a_t that leads to frame t+1, and returns
logits over the codes of frame t+1 and the new state:
    e   = embed(tokens_t)                                        (B, E, h, w)
    e, s = warp(e, a_t), warp(s, a_t)                            known-motion prior (below)
    s_l = FiLM-ConvGRU_l(input_l, s_l, a_t)   for each layer l   input_1 = [e, action planes]
    logits = head(s_L) + copy · onehot(warp_nearest(tokens_t))   (B, K, h, w)
Actions enter three ways: FiLM (per-channel scale/shift of every gate from an action MLP),
spatial planes (the action broadcast over the grid, at every layer's input) and the warp.
Warp: turning by Δyaw shifts the picture sideways by about focal·tan(Δyaw) pixels and pitch
shifts it vertically, so the state and the input embedding are shifted by the commanded amount
before the update (bilinear grid_sample); the cell then only paints what the shift revealed.
The copy bias adds a learned logit to the code that the shift carries to each position: on
the synthetic world this prior took a plain cell from no control (yaw_response −0.04) to 0.91
in the same 12 CPU minutes (REFERENCES, "Why world models drift").
Action dropout (training) replaces an action with the null action: zeros and a 0 "present"
flag, no warp. At inference `guidance` w mixes uncond + w·(cond − uncond) logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

import ochre.kernels as kernels

ACTIONS = 4
# Content shift per unit action (±15° per step, DESIGN §3.2) at the renderer's 70° field of view:
# 32 / tan(35°) = 45.7 px focal, 45.7·tan(15°) = 12.2 px = 3.06 tokens of 4 px.
SHIFT_PER_UNIT = 3.06


@dataclass
class DynamicsConfig:
    codebook_size: int = 2048                  # K
    grid: int = 16                             # h = w
    embed_dim: int = 64                        # E
    hidden: tuple[int, ...] = (128, 128)       # C of each ConvGRU layer
    head_dim: int = 64                         # 1×1 bottleneck before the K-way head
    action_embed: int = 64                     # FiLM MLP width
    action_planes: bool = True                 # actions as spatial input planes at every layer
    warp: bool = True                          # shift state and input by the commanded yaw/pitch
    copy_bias: bool = True                     # learned logit for the warped current code
    shift_per_unit: float = SHIFT_PER_UNIT     # tokens of shift per unit yaw/pitch (initial; learned)
    impl: str = "auto"                         # fused step kernel: "auto" | "triton" | "torch"

    def __post_init__(self):
        self.hidden = tuple(self.hidden)
        if self.codebook_size < 2 or self.grid < 1 or self.embed_dim < 1 or not self.hidden:
            raise ValueError(f"sizes must be positive: {self}")
        if min(self.hidden) < 1 or self.head_dim < 1 or self.action_embed < 1:
            raise ValueError(f"channel counts must be positive: {self}")
        if self.impl not in ("auto", "triton", "torch"):
            raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {self.impl!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> DynamicsConfig:
        presets = {
            # CPU demos and tests. A demo trains only ~20-60k predicted frames, so steps beat width:
            # (64, 64) trains 1.3x the frames/s of (96, 96) on 2 cores (113 vs 88, batch 16 x 11).
            "tiny": dict(embed_dim=32, hidden=(64, 64), head_dim=48, action_embed=32),
            "base": dict(embed_dim=128, hidden=(256, 256, 256), head_dim=128, action_embed=128),
        }
        if name not in presets:
            raise ValueError(f"unknown dynamics preset {name!r}; choose from {sorted(presets)}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown DynamicsConfig fields {sorted(unknown)}")
        return cls(**{**presets[name], **overrides})


class FiLMConvGRUCell(nn.Module):
    """One ConvGRU layer whose gates are modulated per channel by the action (FiLM).

    gx = W_x * input (3×3), gh = W_h * h (3×3); the gate arithmetic is ochre.kernels.film_gru_step.
    """

    def __init__(self, c_in: int, c: int, a_dim: int, impl: str):
        super().__init__()
        self.c, self.impl = c, impl
        self.conv_x = nn.Conv2d(c_in, 3 * c, 3, padding=1)
        self.conv_h = nn.Conv2d(c, 3 * c, 3, padding=1, bias=False)
        self.film = nn.Linear(a_dim, 6 * c)
        nn.init.zeros_(self.film.weight)        # FiLM starts as the identity (γ = 0, β = 0)
        nn.init.zeros_(self.film.bias)

    def forward(self, gx: torch.Tensor, h: torch.Tensor, a_emb: torch.Tensor) -> torch.Tensor:
        """gx (B, 3C, h, w) = conv_x(input), h (B, C, h, w), a_emb (B, a_dim) -> h' (B, C, h, w)."""
        gh, film = self.conv_h(h), self.film(a_emb)
        if self.impl == "torch":                  # the reference is the spec; always present
            return kernels.film_gru_step_ref(gx, gh, h, film)
        return kernels.film_gru_step(gx, gh, h, film, impl=self.impl)


class Dynamics(nn.Module):
    kind = "dynamics"  # recorded in checkpoints

    def __init__(self, config: DynamicsConfig):
        super().__init__()
        self.config = cfg = config
        K, E = cfg.codebook_size, cfg.embed_dim
        planes = ACTIONS + 1 if cfg.action_planes else 0     # + the "present" flag
        self.embed = nn.Embedding(K, E)
        self.action_mlp = nn.Sequential(nn.Linear(ACTIONS + 1, cfg.action_embed), nn.SiLU(),
                                        nn.Linear(cfg.action_embed, cfg.action_embed), nn.SiLU())
        c_in = [E + planes] + [c + planes for c in cfg.hidden[:-1]]
        self.cells = nn.ModuleList(FiLMConvGRUCell(ci, c, cfg.action_embed, cfg.impl)
                                   for ci, c in zip(c_in, cfg.hidden))
        self.head = nn.Sequential(nn.Conv2d(cfg.hidden[-1], cfg.head_dim, 1), nn.SiLU(),
                                  nn.Conv2d(cfg.head_dim, K, 1))
        if cfg.copy_bias:
            # A global copy logit plus a per-position correction the state predicts (zero at start):
            # the model learns where copying is right (kept content) and where not (revealed strips).
            # Starting at log K makes the copy as likely as all other codes together (p ≈ 0.5) from
            # step 0: the head learns a residual on "repeat, shifted" instead of discovering it.
            self.copy_logit = nn.Parameter(torch.tensor(math.log(cfg.codebook_size)))
            self.copy_gate = nn.Conv2d(cfg.hidden[-1], 1, 1)
            nn.init.zeros_(self.copy_gate.weight)
            nn.init.zeros_(self.copy_gate.bias)
        if cfg.warp:
            self.shift_scale = nn.Parameter(torch.tensor([cfg.shift_per_unit, cfg.shift_per_unit]))
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, cfg.grid), torch.linspace(-1, 1, cfg.grid), indexing="ij")
        self.register_buffer("base_grid", torch.stack([xs, ys], dim=-1), persistent=False)  # (h, w, 2)

    # -- state ------------------------------------------------------------------------------
    def state_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample state shapes: (C_l, h, w) per layer, then (2,) the copy prior's sub-token residual."""
        g = self.config.grid
        return [(c, g, g) for c in self.config.hidden] + [(2,)]

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Zero state: fixed shapes, preallocatable (see state_shapes)."""
        device = device if device is not None else self.embed.weight.device
        return [torch.zeros(batch, *shape, device=device, dtype=dtype) for shape in self.state_shapes()]

    @staticmethod
    def realign(state: list[torch.Tensor]) -> list[torch.Tensor]:
        """The state for a real (not dreamed) input frame: its codes sit exactly where the camera
        is, so no sub-token residual is owed."""
        return [*state[:-1], torch.zeros_like(state[-1])]

    # -- pieces -------------------------------------------------------------------------------
    @staticmethod
    def with_flag(actions: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """actions (..., 4) -> (..., 5) with the "present" flag; present (...) 0/1 drops actions."""
        flag = torch.ones_like(actions[..., :1]) if present is None else present[..., None].to(actions.dtype)
        return torch.cat([actions * flag, flag], dim=-1)

    def _shift(self, act: torch.Tensor) -> torch.Tensor:
        """Content shift in tokens that the commanded yaw/pitch causes: act (B, 5) -> (B, 2) [x, y].

        Turning right (yaw > 0) moves content left, so output x samples input x + shift; looking
        down (pitch > 0) moves it up, so output y samples input y + shift."""
        return act[:, :2] * self.shift_scale

    def _grid(self, shift: torch.Tensor) -> torch.Tensor:
        """Sampling grid for a shift in tokens: (B, 2) -> (B, h, w, 2); grid units are 2/(w−1) per token."""
        return self.base_grid + (shift * (2.0 / max(self.config.grid - 1, 1)))[:, None, None, :]

    def _warp(self, x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(x, self._grid(shift).to(x.dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=True)

    def _copy_codes(self, tokens: torch.Tensor, shift: torch.Tensor | None,
                    residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The code the shift carries to each position, whether one does, and the residual owed.

        Codes move by whole tokens: round(shift + residual), the rest is carried to the next step,
        so a slow turn (0.3 token per step) still moves the dream, one token every few steps, and the
        dreamed content never lags the camera by more than half a token.
        -> codes (B, h, w) long, valid (B, h, w) bool, residual (B, 2)."""
        if shift is None:
            return tokens, torch.ones_like(tokens, dtype=torch.bool), residual
        total = shift.detach() + residual
        whole = torch.round(total)                                                     # (B, 2)
        # Codes as floats are exact below 2^24; +1 so that 0 marks "from outside the grid".
        moved = F.grid_sample(tokens[:, None].to(whole.dtype) + 1, self._grid(whole), mode="nearest",
                              padding_mode="zeros", align_corners=True)[:, 0]          # (B, h, w)
        return (moved - 1).clamp_min(0).long(), moved > 0.5, total - whole

    def input_gates(self, tokens: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """First layer's input convolution for any batch of frames: tokens (N, h, w), act (N, 5)
        -> gx (N, 3C, h, w). Teacher-forced windows call it once for all T frames."""
        e = self.embed(tokens).permute(0, 3, 1, 2)                                   # (N, E, h, w)
        if self.config.warp:
            e = self._warp(e, self._shift(act))
        return self.cells[0].conv_x(self._with_planes(e, act))

    def _with_planes(self, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        if not self.config.action_planes:
            return x
        B, _, h, w = x.shape
        return torch.cat([x, act[:, :, None, None].expand(B, act.shape[1], h, w).to(x.dtype)], dim=1)

    def core(self, gx0: torch.Tensor, tokens: torch.Tensor, act: torch.Tensor,
             state: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The recurrent part of a step, given the first layer's input gates gx0 (B, 3C, h, w)."""
        *hidden, residual = state
        shift = self._shift(act) if self.config.warp else None
        a_emb = self.action_mlp(act)                                                  # (B, a)
        new_state, x = [], None
        for i, (cell, s) in enumerate(zip(self.cells, hidden)):
            if shift is not None:
                s = self._warp(s, shift)
            gx = gx0 if i == 0 else cell.conv_x(self._with_planes(x, act))
            x = cell(gx, s, a_emb)
            new_state.append(x)
        logits = self.head(x).to(torch.promote_types(x.dtype, torch.float32))          # (B, K, h, w)
        if self.config.copy_bias:
            codes, valid, residual = self._copy_codes(tokens, shift, residual)
            bonus = (self.copy_logit + self.copy_gate(x)[:, 0].to(logits.dtype)) * valid  # (B, h, w)
            logits = logits.scatter_add(1, codes[:, None], bonus[:, None])
        return logits, [*new_state, residual]

    # -- public API ---------------------------------------------------------------------------
    def step(self, tokens: torch.Tensor, actions: torch.Tensor, state: list[torch.Tensor],
             present: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens (B, h, w) int, actions (B, 4) float, state -> logits (B, K, h, w) fp32, new state.

        Fixed shapes and no host sync: the unit that export, runtime and training all run.
        """
        act = self.with_flag(actions, present)                                        # (B, 5)
        return self.core(self.input_gates(tokens, act), tokens, act, state)

    def forward(self, tokens, actions, state, present=None):
        return self.step(tokens, actions, state, present)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
