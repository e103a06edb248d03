"""Dynamics model: FiLM-conditioned ConvGRU over the tokenizer's 16×16 code grid.

Legend: B batch, T time, K codebook size, E token embedding dim, C state channels per layer,
h w token grid (16×16), A = 4 actions [yaw, pitch, move_x, move_z] (docs/data.md#actions).

One step reads the tokens of frame t and the action a_t that leads to frame t+1, and returns
logits over the codes of frame t+1 and the new state:
    e   = embed(tokens_t)                                        (B, E, h, w)
    e, s = warp(e, a_t), warp(s, a_t)                            known-motion prior (below)
    s_l = FiLM-ConvGRU_l(input_l, s_l, a_t)   for each layer l   input_1 = [e, action planes]
    p      = g · onehot(shift_whole(tokens_t)) + (1 − g) · softmax(head(s_L))   (B, K, h, w)
Actions enter three ways: FiLM (per-channel scale/shift of every gate from an action MLP),
spatial planes (the action broadcast over the grid, at every layer's input) and the warp.
Warp: turning by Δyaw shifts the picture sideways by about focal·tan(Δyaw) pixels and pitch
shifts it vertically, so the state and the input embedding are shifted by the commanded amount
before the update (bilinear grid_sample); the cell then only paints what the shift revealed.
The copy prior proposes, for each position, the code the shift carries there, and a gate g
(pointer-generator) mixes it with the head's distribution: without a copy prior a small cell
trained on a CPU learns no control at all. Positions the turn reveals get a proposal too, with a
gate bias of its own (`fill`): across a yaw turn the columns that left on the other side (same
rows, hence the same elevation: sky stays sky, ground stays ground, with real texture), above or
below a pitch the nearest edge row. A proposal keeps the dream sharp — a copied code is never
blurrier than its source — while the head learns what to paint instead.
Action dropout (training) replaces an action with the null action: zeros and a 0 "present"
flag, no warp. At inference `guidance` w mixes uncond + w·(cond − uncond) logits, and the
decoding's boosts raise the proposals' log-probabilities (SamplingConfig). With copy_bias the
returned logits are log-probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import ochre.kernels as kernels
from ochre.actions import ACTIONS

# Content shift per unit action (±15° per step, docs/data.md#actions) at the renderer's 70° field of view:
# 32 / tan(35°) = 45.7 px focal, 45.7·tan(15°) = 12.2 px = 3.06 tokens of 4 px.
SHIFT_PER_UNIT = 3.06
# The view state (B, VIEW): [x, y] tokens and log zoom the camera is ahead of the codes (what the
# render shows), then the panorama column and row of the view's top-left code.
VIEW = 5
MEMORY_ROWS = 8           # panorama rows above and below the level view: about ±40° of pitch
COPY, MEMORY, GUESS = 0, 1, 2    # what a position's proposal is: a copy from the view, a remembered code, a guess
ZOOM_STEP = math.log(7.5 / 6.5)   # the log zoom that moves the edge tokens of a 16-grid by one token
POINTER_START = 0.98              # a new pointer's weight on the prior's own code


def view_grid(base: torch.Tensor, view: torch.Tensor, per_unit: float) -> torch.Tensor:
    """The grid_sample grid (align_corners) of a view: base (H, W, 2) in [-1, 1], view (B, 3) [x, y
    shift, log zoom], per_unit grid units of one view unit (a token) -> (B, H, W, 2): output p
    samples input centre + (p − centre) · e^−zoom + shift."""
    scale = torch.exp(-view[:, 2])[:, None, None, None]
    return base * scale + (view[:, :2] * per_unit)[:, None, None, :]


# The panorama (B, R, P): per cell the code seen there + 1 (0: never seen, so a zeroed state is an
# empty panorama on every backend); the view's top-left code sits at column view[3] (mod P), row
# MEMORY_ROWS + view[4].
def _cells(position: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Panorama cells of view positions: position (B, 2) [column, row], ys (B, h, 1), xs (B, 1, w)
    -> flat cell indices (B, h, w) and whether the row is inside the panorama (B, h, w)."""
    rows, cols = shape
    at = (-1,) + (1,) * (ys.dim() - 1)                 # any trailing dims: (B, h, 1, n) too (the pointer's)
    r = MEMORY_ROWS + position[:, 1].long().view(at) + ys                             # (B, h, 1)
    c = torch.remainder(position[:, 0].long().view(at) + xs, cols)                     # (B, 1, w)
    ok = (r >= 0) & (r < rows)
    full = torch.broadcast_shapes(r.shape, c.shape)
    return (r.clamp(0, rows - 1) * cols + c).expand(full), ok.expand(full)


def _write_view(panorama: torch.Tensor, tokens: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    """The panorama with the view's codes tokens (B, h, w) written at its position."""
    B, h, w = tokens.shape
    idx, _ = _cells(view[:, 3:], torch.arange(h, device=tokens.device)[None, :, None],
                    torch.arange(w, device=tokens.device)[None, None, :], panorama.shape[-2:])
    flat = panorama.flatten(1).scatter(1, idx.reshape(B, -1), (tokens + 1).to(panorama.dtype).reshape(B, -1))
    return flat.view_as(panorama)


def _read_panorama(panorama: torch.Tensor, position: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """The panorama's cells at view positions (ys, xs): (B, h, w), code + 1 or 0 (unseen or off the panorama)."""
    idx, ok = _cells(position, ys, xs, panorama.shape[-2:])
    return torch.where(ok, panorama.flatten(1).gather(1, idx.reshape(len(idx), -1)).view_as(idx), 0.0)


def _move(position: torch.Tensor, whole: torch.Tensor, shape, h: int) -> torch.Tensor:
    """The view's panorama position after its codes moved by whole (B, 2) tokens [x, y]."""
    rows, cols = shape
    col = torch.remainder(position[:, 0] + whole[:, 0], cols)
    row = (position[:, 1] + whole[:, 1]).clamp(-MEMORY_ROWS, rows - MEMORY_ROWS - h)
    return torch.stack([col, row], dim=1)


# The motion prior's settings: geometry measured on the clips, kept in the config beside the weights
# (a checkpoint's hash names its weights only, so an eval records these too).
MOTION_PRIOR = ("shift_per_unit", "strafe_per_unit", "zoom_per_unit")


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
    fill: bool = True                          # ... and a proposal for the positions the turn reveals
    memory: bool = False                       # ... from a panorama of the codes seen from here (warp only)
    coords: bool = False                       # the screen position (row, column in [-1, 1]) as input planes
    # A learned pointer (copy_bias only): the copy proposal becomes the state's choice among the (2r + 1)²
    # codes around the prior's source, r = pointer (0: the prior's own code, as before).
    pointer: int = 0
    # The motion prior's geometry, measured on the train clips (ochre.data.check.content_shift, at
    # tokenize time): tokens of picture shift per unit [yaw, pitch] (this default is the synthetic
    # world's at 70°), per unit move_x (strafing), and the log zoom per unit move_z (walking).
    shift_per_unit: tuple[float, float] = (SHIFT_PER_UNIT, SHIFT_PER_UNIT)
    strafe_per_unit: float = 0.0
    zoom_per_unit: float = 0.0
    impl: str = "auto"                         # fused step kernel: "auto" | "triton" | "torch"
    # Calibration only (the action-blind model of docs/metrics.md): every action is the null action,
    # in training and inference alike, so the model cannot respond to its input.
    blind: bool = False

    def __post_init__(self):
        self.hidden = tuple(self.hidden)
        if isinstance(self.shift_per_unit, (int, float)):
            self.shift_per_unit = (float(self.shift_per_unit),) * 2
        self.shift_per_unit = tuple(float(v) for v in self.shift_per_unit)
        if len(self.shift_per_unit) != 2:
            raise ValueError(f"shift_per_unit is [yaw, pitch], got {self.shift_per_unit}")
        if self.codebook_size < 2 or self.grid < 1 or self.embed_dim < 1 or not self.hidden:
            raise ValueError(f"sizes must be positive: {self}")
        if min(self.hidden) < 1 or self.head_dim < 1 or self.action_embed < 1:
            raise ValueError(f"channel counts must be positive: {self}")
        if self.pointer < 0 or (self.pointer and not self.copy_bias):
            raise ValueError(f"pointer is a radius >= 0 over the copy prior's proposals (copy_bias), got "
                             f"{self.pointer}")
        if self.impl not in ("auto", "triton", "torch"):
            raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {self.impl!r}")

    def motion_prior(self) -> dict:
        """The motion prior's settings, as config.json writes them."""
        return {k: list(v) if isinstance(v, tuple) else v for k in MOTION_PRIOR for v in (getattr(self, k),)}

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
        planes = (ACTIONS + 1 if cfg.action_planes else 0) + (2 if cfg.coords else 0)    # + the "present" flag
        self.embed = nn.Embedding(K, E)
        self.action_mlp = nn.Sequential(nn.Linear(ACTIONS + 1, cfg.action_embed), nn.SiLU(),
                                        nn.Linear(cfg.action_embed, cfg.action_embed), nn.SiLU())
        c_in = [E + planes] + [c + planes for c in cfg.hidden[:-1]]
        self.cells = nn.ModuleList(FiLMConvGRUCell(ci, c, cfg.action_embed, cfg.impl)
                                   for ci, c in zip(c_in, cfg.hidden))
        # The K-way head is pointwise, applied channels-last: its logits are (B, h, w, K) in memory,
        # so every reduction over the codes (log-softmax, the sampler's softmax and CDF, the loss)
        # runs along contiguous rows of K. As 1x1 convolutions the codes sat at stride h·w: Inductor's
        # log-softmax and softmax over that axis took 3 ms of a 7.4 ms CPU step at batch 1 (the
        # convolutions 2.2 ms), and ONNX Runtime transposed to channels-last and back around each.
        self.head = nn.Sequential(nn.Linear(cfg.hidden[-1], cfg.head_dim), nn.SiLU(), nn.Linear(cfg.head_dim, K))
        if cfg.copy_bias:
            # Pointer-generator: p(code) = g · [code = proposal] + (1 − g) · softmax(head), with the
            # gate g = σ(copy_gate([state, action planes]) + bias) per position: a probability the
            # loss calibrates directly (an additive logit on the proposal could not tell standing
            # still, where most codes repeat, from walking, where few do). Biases start at g = 0.5
            # (copies) and 0.12 (fills: a guess of the content's kind).
            self.copy_logit = nn.Parameter(torch.tensor(0.0))
            self.copy_gate = nn.Conv2d(cfg.hidden[-1] + planes, 1, 3, padding=1)
            nn.init.zeros_(self.copy_gate.weight)
            nn.init.zeros_(self.copy_gate.bias)
            self.fill_logit = nn.Parameter(torch.tensor(-2.0)) if cfg.fill else None
            # A remembered code is what this spot looked like: it starts as trusted as a copy.
            self.memory_logit = nn.Parameter(torch.tensor(0.0)) if self.has_memory else None
            if cfg.pointer:
                # Which of the (2r + 1)² codes around the prior's source each position copies: log-weights
                # from the state. It starts near the prior (POINTER_START of the weight on its own code), so a
                # model trained without a pointer grows one that dreams almost as it did (2 % of the copy
                # mass moves to the neighbours).
                n = (2 * cfg.pointer + 1) ** 2
                self.pointer = nn.Conv2d(cfg.hidden[-1] + planes, n, 3, padding=1)
                nn.init.zeros_(self.pointer.weight)
                others = math.log((1 - POINTER_START) / (POINTER_START * (n - 1)))      # each neighbour's logit
                with torch.no_grad():
                    self.pointer.bias.fill_(others).index_fill_(0, torch.tensor(n // 2), 0.0)
        if cfg.warp:
            # Fixed, not learned: the shift is the camera's geometry, measured on the data (a learned
            # one shrinks, since a bilinear state warp prefers less motion, and the copies lag the camera).
            self.register_buffer("shift_scale", torch.tensor(cfg.shift_per_unit), persistent=False)
            self.register_buffer("move_scale", torch.tensor([cfg.strafe_per_unit, cfg.zoom_per_unit]),
                                 persistent=False)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, cfg.grid), torch.linspace(-1, 1, cfg.grid), indexing="ij")
        self.register_buffer("base_grid", torch.stack([xs, ys], dim=-1), persistent=False)  # (h, w, 2)

    # -- state ------------------------------------------------------------------------------
    def state_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample state shapes: (C_l, h, w) per layer, with memory the panorama (rows, columns),
        then (VIEW,) the view (VIEW says what it holds; the render reads its first three)."""
        g = self.config.grid
        panorama = [self.panorama_shape()] if self.has_memory else []
        return [(c, g, g) for c in self.config.hidden] + panorama + [(VIEW,)]

    @property
    def has_memory(self) -> bool:
        return self.config.memory and self.config.warp and self.config.copy_bias

    def panorama_shape(self) -> tuple[int, int]:
        """(rows, columns) of the panorama: the view's rows and MEMORY_ROWS above and below; a column
        per token of a full turn (24 units of yaw of 15°), at least the view's width."""
        g = self.config.grid
        return (g + 2 * MEMORY_ROWS, max(g, round(24 * self.config.shift_per_unit[0])))

    def init_state(self, batch: int, device=None, dtype=torch.float32) -> list[torch.Tensor]:
        """Zero state: fixed shapes, preallocatable (see state_shapes)."""
        device = device if device is not None else self.embed.weight.device
        return [torch.zeros(batch, *shape, device=device, dtype=dtype) for shape in self.state_shapes()]

    @staticmethod
    def realign(state: list[torch.Tensor]) -> list[torch.Tensor]:
        """The state for a real (not dreamed) input frame: its codes sit exactly where the camera
        is, so no shift or zoom is owed (the panorama position stays)."""
        view = state[-1]
        return [*state[:-1], torch.cat([torch.zeros_like(view[:, :3]), view[:, 3:]], dim=1)]

    # -- pieces -------------------------------------------------------------------------------
    def with_flag(self, actions: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """actions (..., 4) -> (..., 5) with the "present" flag; present (...) 0/1 drops actions
        (a blind model drops them all)."""
        flag = torch.ones_like(actions[..., :1]) if present is None else present[..., None].to(actions.dtype)
        if self.config.blind:
            flag = torch.zeros_like(flag)
        return torch.cat([actions * flag, flag], dim=-1)

    def _motion(self, act: torch.Tensor) -> torch.Tensor:
        """The picture motion the commanded action causes: act (B, 5) -> (B, 3) [x, y shift in tokens,
        log zoom about the centre].

        Turning or strafing right moves the content left, so output x samples input x + shift;
        looking down (pitch > 0) moves it up, so output y samples input y + shift; walking forward
        magnifies it, so output p samples input centre + (p − centre) · e^−zoom."""
        shift = act[:, :2] * self.shift_scale + torch.stack([act[:, 2] * self.move_scale[0],
                                                             torch.zeros_like(act[:, 2])], dim=1)
        return torch.cat([shift, (act[:, 3] * self.move_scale[1])[:, None]], dim=1)

    def _warp(self, x: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w) moved by motion (B, 3) (bilinear, zeros outside)."""
        per_token = 2.0 / max(self.config.grid - 1, 1)                               # grid units of a token
        return F.grid_sample(x, view_grid(self.base_grid, motion, per_token).to(x.dtype), mode="bilinear",
                             padding_mode="zeros", align_corners=True)

    def _copy_codes(self, tokens: torch.Tensor, motion: torch.Tensor | None, view: torch.Tensor,
                    panorama: torch.Tensor | None = None, moving: torch.Tensor | None = None, radius: int = 0):
        """The code the motion carries to each position, which kind of proposal it is, the view owed
        afterwards and the panorama.

        Codes move by whole tokens: round(shift + owed shift), the rest is carried to the next step
        (and shown by the render, ochre.models.step.render), so a slow turn (0.3 token per step)
        moves the dream smoothly and its codes one token every few steps; they never lag the camera
        by more than half a token. Zoom is carried the same way until it moves the edge tokens by a
        whole token (ZOOM_STEP), then the codes are resampled about the centre. A position whose
        source is outside the view is filled from the panorama where it holds that spot (memory of
        what the view turned away from), else by wrapping around horizontally and clamping to the
        edge row vertically. The panorama holds codes seen from where the player stands: the current
        view is written into it each step, and moving (translation) clears it.
        radius r > 0 (the learned pointer): codes (B, h, w, (2r + 1)²) instead, the codes at the offsets
        [-r, r]² (row-major) around each source, each looked up as the source itself is (the view's code,
        else the panorama's, else the wrap-around guess); the middle one is the proposal above.
        -> codes (B, h, w) long, kind (B, h, w) long (COPY, MEMORY, GUESS), view (B, VIEW), panorama."""
        B, h, w = tokens.shape
        if motion is None:
            codes = tokens
            if radius:                  # the neighbourhood of each position itself
                ys = torch.arange(h, device=tokens.device)[None, :, None].expand(B, h, 1)
                xs = torch.arange(w, device=tokens.device)[None, None, :].expand(B, 1, w)
                codes = _codes_at(tokens, *_neighbourhood(ys, xs, radius), None, None)[0]
            return codes, torch.full_like(tokens, COPY), view, panorama
        if panorama is not None:
            panorama = _write_view(torch.where(moving[:, None, None], 0.0, panorama), tokens, view)
        total = motion.detach() + view[:, :3]                                           # (B, 3)
        whole = torch.round(total[:, :2])                                               # (B, 2)
        zoom = torch.where(total[:, 2].abs() >= ZOOM_STEP, total[:, 2], torch.zeros_like(total[:, 2]))   # (B,)
        scale = torch.exp(-zoom)[:, None, None]
        cy, cx = (h - 1) / 2, (w - 1) / 2
        ys = torch.round(cy + (torch.arange(h, device=tokens.device)[None, :, None] - cy) * scale
                         + whole[:, 1, None, None]).long()                               # (B, h, 1)
        xs = torch.round(cx + (torch.arange(w, device=tokens.device)[None, None, :] - cx) * scale
                         + whole[:, 0, None, None]).long()                               # (B, 1, w)
        position = view[:, 3:]                                                          # (B, 2) column, row
        if radius:
            codes, kind = _codes_at(tokens, *_neighbourhood(ys, xs, radius), panorama, position)
            kind = kind[..., kind.shape[-1] // 2]
        else:
            codes, kind = _codes_at(tokens, ys, xs, panorama, position)
        if panorama is not None:
            position = _move(position, whole, panorama.shape[-2:], h)
        owed = torch.cat([total[:, :2] - whole, (total[:, 2] - zoom)[:, None], position], dim=1)
        return codes, kind, owed, panorama

    def input_gates(self, tokens: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """First layer's input convolution for any batch of frames: tokens (N, h, w), act (N, 5)
        -> gx (N, 3C, h, w). Teacher-forced windows call it once for all T frames."""
        e = self.embed(tokens).permute(0, 3, 1, 2)                                   # (N, E, h, w)
        if self.config.warp:
            e = self._warp(e, self._motion(act))
        return self.cells[0].conv_x(self._with_planes(e, act))

    def _with_planes(self, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """x (B, C, h, w) with the action planes (B, 5, h, w) and the screen-position planes (B, 2, h, w)
        each config asks for, after it."""
        B, _, h, w = x.shape
        parts = [x]
        if self.config.action_planes:
            parts.append(act[:, :, None, None].expand(B, act.shape[1], h, w).to(x.dtype))
        if self.config.coords:
            parts.append(self.base_grid.permute(2, 0, 1)[None].expand(B, 2, h, w).to(x.dtype))
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def proposals(self, tokens: torch.Tensor, act: torch.Tensor, view: torch.Tensor,
                  panorama: torch.Tensor | None = None):
        """What the copy prior proposes for the next frame: tokens (B, h, w), act (B, 5), the state's
        view (B, VIEW) and panorama -> codes (B, h, w), kind (B, h, w), the view owed, the panorama."""
        motion = self._motion(act) if self.config.warp else None
        return self._copy_codes(tokens, motion, view, panorama, act[:, 2:4].abs().amax(dim=1) > 0)

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's logits for the last layer's state: x (B, C, h, w) -> (B, h, w, K), at least fp32."""
        return self.head(x.permute(0, 2, 3, 1)).to(torch.promote_types(x.dtype, torch.float32))

    @staticmethod
    def boost(kind: torch.Tensor, boost: tuple[float, ...], act: torch.Tensor | None = None) -> torch.Tensor | None:
        """Decoding's continuity preference, the logit added to each position's proposed code:
        kind (B, h, w) -> (B, h, w), boost[0] for a copy or a remembered code, boost[1] for a
        guessed fill (ochre.models.sampling.SamplingConfig says why), scaled towards boost[2] (the
        share kept) as a movement key of act (B, 5) is held: a step forward changes most of the
        view, where a turn only moves it. None when there is no boost. Never used by the loss."""
        copy, fill, *walk = boost
        if not (copy or fill):
            return None
        extra = torch.where(kind == GUESS, fill, copy).to(torch.float32 if act is None else act.dtype)   # (B, h, w)
        if walk and walk[0] < 1 and act is not None:
            moving = act[:, 2:4].abs().amax(dim=1).clamp(max=1.0)                       # (B,)
            extra = extra * (1 - (1 - walk[0]) * moving)[:, None, None]
        return extra

    def core(self, gx0: torch.Tensor, tokens: torch.Tensor, act: torch.Tensor, state: list[torch.Tensor],
             boost: tuple[float, ...] = (0.0, 0.0), parts: bool = False):
        """The recurrent part of a step, given the first layer's input gates gx0 (B, 3C, h, w).
        parts (models with copy_bias): the distribution as its Mixture instead of its logits."""
        *hidden, view = state
        panorama = hidden.pop() if self.has_memory else None
        motion = self._motion(act) if self.config.warp else None
        a_emb = self.action_mlp(act)                                                  # (B, a)
        new_state, x = [], None
        for i, (cell, s) in enumerate(zip(self.cells, hidden)):
            if motion is not None:
                s = self._warp(s, motion)
            gx = gx0 if i == 0 else cell.conv_x(self._with_planes(x, act))
            x = cell(gx, s, a_emb)
            new_state.append(x)
        logits = self.head_logits(x)                                                  # (B, h, w, K)
        if self.config.copy_bias:
            radius = {"radius": self.config.pointer} if self.config.pointer else {}
            codes, kind, view, panorama = self._copy_codes(tokens, motion, view, panorama,
                                                           act[:, 2:4].abs().amax(dim=1) > 0, **radius)
            xa = self._with_planes(x, act)
            gate = self.copy_gate(xa)[:, 0].float()                                        # (B, h, w)
            weights = (self.pointer(xa).float().permute(0, 2, 3, 1).log_softmax(dim=-1)    # (B, h, w, n)
                       if self.config.pointer else None)
            # Without fills a revealed position gets no proposal: g = σ(−30) ≈ 1e-13.
            fill = self.fill_logit if self.fill_logit is not None else torch.full_like(self.copy_logit, -30.0)
            memory = self.memory_logit if self.memory_logit is not None else fill
            gate = gate + torch.where(kind == COPY, self.copy_logit, torch.where(kind == MEMORY, memory, fill))
            mixture = Mixture(logits, codes, gate, self.boost(kind, boost, act), weights)
            new_state += [panorama] if panorama is not None else []
            if parts:
                return mixture, [*new_state, view]
            logits = mixture.log_probs()
        elif parts:
            raise ValueError("parts=True needs a model with copy_bias (the mixture is the copy prior's)")
        # (B, K, h, w) as a view: the codes stay the contiguous axis in memory (see __init__).
        return logits.permute(0, 3, 1, 2), [*new_state, view]

    # -- public API ---------------------------------------------------------------------------
    def step(self, tokens: torch.Tensor, actions: torch.Tensor, state: list[torch.Tensor],
             present: torch.Tensor | None = None, boost: tuple[float, ...] = (0.0, 0.0), parts: bool = False):
        """tokens (B, h, w) int, actions (B, 4) float, state -> logits (B, K, h, w) fp32 (a view of
        channels-last memory: .movedim(1, -1) is contiguous), new state.
        boost: decoding's [copy, fill] logit boosts (SamplingConfig), 0 for the model's own logits.
        parts: the Mixture in place of the logits (copy_bias models; ochre.models.sampling.sample_mixture).

        Fixed shapes and no host sync: the unit that export, runtime and training all run.
        """
        act = self.with_flag(actions, present)                                        # (B, 5)
        return self.core(self.input_gates(tokens, act), tokens, act, state, boost, parts)

    def forward(self, tokens, actions, state, present=None):
        return self.step(tokens, actions, state, present)


class Mixture(NamedTuple):
    """The pointer-generator's next-code distribution as its factors: the head's logits z (B, h, w, K),
    the proposed codes (B, h, w), the gate logits (B, h, w), the decoding's boost at the
    proposals (B, h, w) or None, and with a learned pointer the log-weights (B, h, w, n) of n proposals
    per position (codes then (B, h, w, n)): the gate's mass g is shared among them by these weights.
    log_probs() is the distribution the model means (_mix); ochre.models.sampling.sample_mixture draws
    from it without materialising it."""

    z: torch.Tensor
    codes: torch.Tensor
    gate: torch.Tensor
    extra: torch.Tensor | None
    weights: torch.Tensor | None = None

    def log_probs(self) -> torch.Tensor:
        """(B, h, w, K): log((1 − g) · softmax(z)), log(g · w_p + (1 − g) · softmax(z)) + boost at each
        proposal p of weight w_p (1 for the single proposal)."""
        return _mix(*self)

    def boosted(self, lp: torch.Tensor) -> torch.Tensor:
        """lp (B, h, w, K), the log-probabilities without the decoding's boost (this mixture's log_probs()
        with extra=None) -> log_probs() with it: the boost added at the proposals, without mixing again
        (a code several neighbours propose gets it once: every copy of it is the same entry)."""
        if self.extra is None:
            return lp
        idx = _candidates(self.codes, self.weights)                                   # (B, h, w, n)
        at = lp.gather(-1, idx) + _boost_at(self.extra, _pooled_weights(self.codes, self.weights))
        return lp.scatter(-1, idx, at)

    def candidates(self) -> torch.Tensor:
        """The proposed codes as (B, h, w, n), n = 1 without a pointer."""
        return _candidates(self.codes, self.weights)

    def proposal(self, zp: torch.Tensor, lse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two numbers that normalise the mixture, from the proposals' head logits zp (B, h, w, n)
        and logsumexp(z) lse (B, h, w, 1) -> shift (B, h, w, 1), the log-probability of every code but
        the proposals being z − shift, and each proposal's log-probability (B, h, w, n)."""
        shift = lse - _log_sigmoid(-self.gate)[..., None]                              # lse(z) − log(1 − g)
        pooled = _pooled_weights(self.codes, self.weights)
        at = _log_add_exp(zp - shift, _copy_mass(self.gate, pooled))
        return shift, at if self.extra is None else at + _boost_at(self.extra, pooled)


def _candidates(codes: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The proposed codes as (B, h, w, n): the single proposal (B, h, w) gains the axis, a pointer's have it."""
    return codes[..., None] if weights is None else codes


def _pooled_weights(codes: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor | None:
    """With a pointer, the log of its summed weight of every proposal of the same code (B, h, w, n),
    since neighbours often propose the same code; None for the single proposal (weight 1)."""
    if weights is None:
        return None
    same = codes[..., :, None] == codes[..., None, :]                                # (B, h, w, n, n)
    return torch.where(same, weights[..., None, :], float("-inf")).logsumexp(dim=-1)


def _copy_mass(gate: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
    """log of the copy mass at each proposal: log g (B, h, w, 1) for the single proposal, log(g · W)
    (B, h, w, n) for a pointer's proposal of pooled weight W."""
    log_g = _log_sigmoid(gate)[..., None]
    return log_g if pooled is None else log_g + pooled


def _boost_at(extra: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
    """The decoding's boost b (B, h, w) at each proposal: b (B, h, w, 1) for the single proposal; for a
    pointer's proposal of pooled weight W, log(1 − W + W·e^b) (B, h, w, n), the single proposal's
    boost in expectation over the pointer's choice of the code it copies (b at W = 1, 0 at W = 0).
    Adding b to every proposal instead multiplied the head's own mass at each of a neighbourhood's
    codes by e^b (3e6 at the shipped copy boost of 15), whatever weight the pointer gave them, and its
    dreams dissolved (bench/results/pointer_cpu_2026-12-05.json). exp − 1 and log(1 + x), not expm1
    and log1p: ONNX has neither (see _log_sigmoid)."""
    if pooled is None:
        return extra[..., None]
    b = extra.to(torch.promote_types(extra.dtype, torch.float32))
    return torch.log(1 + (torch.exp(b) - 1)[..., None] * pooled.exp())


def _mix(z: torch.Tensor, codes: torch.Tensor, gate: torch.Tensor, extra: torch.Tensor | None,
         weights: torch.Tensor | None = None) -> torch.Tensor:
    """The pointer-generator's log-probabilities: head logits z (B, h, w, K), proposed codes (B, h, w),
    gate logits (B, h, w), the decoding's boost at the proposals (B, h, w) or None [, the pointer's
    log-weights (B, h, w, n) over proposed codes (B, h, w, n)] -> (B, h, w, K): log((1 − g) · softmax(z))
    everywhere, log(g · w + (1 − g) · softmax(z)) + boost at a proposed code of weight w (1 alone).
    A log-softmax (one fused kernel), then the proposals' values scattered in. The live step draws
    from the same distribution without writing it out (ochre.models.sampling.sample_mixture)."""
    idx = _candidates(codes, weights)                                               # (B, h, w, n)
    lq = z.log_softmax(dim=-1) + _log_sigmoid(-gate)[..., None]                     # + log(1 − g)
    pooled = _pooled_weights(codes, weights)
    at = _log_add_exp(lq.gather(-1, idx), _copy_mass(gate, pooled))                 # (B, h, w, n)
    if extra is not None:
        at = at + _boost_at(extra, pooled)
    if weights is not None:
        # A repeated code's entries are equal, and the scatter keeps one; its gradient would flow back
        # through every copy (scatter's backward gathers), so all but the first are cut off.
        at = torch.where(first_proposals(codes), at, at.detach())
    return lq.scatter(-1, idx, at)


# The gate's log-probabilities from Exp and Log only. ONNX has no LogSigmoid or LogAddExp; the
# exporter writes Log(Sigmoid(x)), and ONNX Runtime's Sigmoid is an approximation whose relative
# error in the tails became 1.4e-4 in the log (5x eager torch's error, failing the export's parity
# check), while Exp and Log are within an ulp or two on every backend.
def _log_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """log σ(x) = min(x, 0) − log(1 + e^−|x|)."""
    return torch.clamp(x, max=0.0) - torch.log1p(torch.exp(-x.abs()))


def _log_add_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(e^a + e^b) = max(a, b) + log(1 + e^−|a − b|)."""
    return torch.maximum(a, b) + torch.log1p(torch.exp(-(a - b).abs()))


def _codes_at(tokens: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, panorama: torch.Tensor | None,
              position: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The copy prior's lookup of sources ys (B, h, 1), xs (B, 1, w) in the view's codes tokens (B, h, w):
    inside the view its code; outside, the panorama's code of that spot (at the view's panorama position
    (B, 2)) where it holds one, else the view's code wrapped around horizontally and clamped to the edge
    row -> codes (B, h, w) and kind (B, h, w) (COPY, MEMORY, GUESS). Sources with a trailing axis,
    (B, h, 1, n) and (B, 1, w, n) (the pointer's neighbourhoods), give (B, h, w, n) each."""
    B, h, w = tokens.shape
    inside = ((ys >= 0) & (ys < h)) & ((xs >= 0) & (xs < w))                            # (B, h, w)
    src = ys.clamp(0, h - 1) * w + torch.remainder(xs, w)                               # (B, h, w)
    codes = tokens.reshape(B, h * w).gather(1, src.reshape(B, -1)).view(src.shape)
    kind = torch.where(inside, COPY, GUESS)
    if panorama is not None:
        seen = _read_panorama(panorama, position, ys, xs)                                # (B, h, w): code + 1, 0 unseen
        remembered = ~inside & (seen > 0)
        codes = torch.where(remembered, seen.long() - 1, codes)
        kind = torch.where(remembered, MEMORY, kind)
    return codes, kind


def _neighbourhood(ys: torch.Tensor, xs: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sources ys (B, h, 1), xs (B, 1, w) -> those at the offsets [-r, r]² (row-major) around each:
    (B, h, 1, (2r + 1)²), (B, 1, w, (2r + 1)²); the middle offset is the source itself."""
    d = torch.arange(-r, r + 1, device=ys.device)
    return ys[..., None] + d.repeat_interleave(2 * r + 1), xs[..., None] + d.repeat(2 * r + 1)


def first_proposals(codes: torch.Tensor) -> torch.Tensor:
    """Of n proposals (..., n), which are the first of their code (..., n) bool: a code several neighbours
    propose is counted once in a sum over codes, and its log-probability has one path back to the weights."""
    n = codes.shape[-1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=codes.device).tril(-1)      # [i, j]: j < i
    return ~((codes[..., :, None] == codes[..., None, :]) & earlier).any(dim=-1)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
