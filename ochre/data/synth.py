"""`ochre synth`: a procedural Minecraft-like world, rendered on the CPU, written as real recordings.

Three parts, each usable alone:
  world     `make_world(seed)`: a periodic (tiling) 512x512-block height map quantised to whole
            blocks, with biomes (water, sand, grass, forest with blocky trees, stone, snow), a
            per-texel colour map (4x4 texels per block face) and a cloud layer.
  policy    `policy(rng, steps)`: balanced behaviour segments at 20 Hz (turn, look, walk every
            way, walk+turn, look around, stand still), camera [pitch, yaw] degrees per tick.
  renderer  `render(world, poses, size)`: an exact heightmap ray caster, vectorised in numpy. Each
            screen column's ray walks the block grid (every cell boundary crossing, in order); the
            first cell whose projected top lies above a pixel colours it (the "voxel space" rule),
            so block tops and walls have exact edges. Pitch shifts the horizon line (a pure
            vertical shift), yaw rotates the rays. Fog fades terrain into the sky colour.
Writers `write_minerl` / `write_vpt` produce DESIGN §3.1 recordings from any frames, so data tests
can feed them hand-made frames; `render_episode` + `run` tie everything together.

Conventions: state t is the frame rendered before action t; action t takes state t to t+1, so
S actions give S + 1 frames. Positive pitch looks down (content moves up), positive yaw turns
right (content moves left). Everything is a function of (seed, episode index): bit-exact
regardless of --workers.
Legend: B frames per render batch, S image size (S x S), K ray segments per column, M world size
in blocks, R texels per block edge, N actions, T video frames.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ochre.actions import TICKS_PER_SECOND, VPT_DEG_PER_COUNT
from ochre.data.video import encode_mp4, write_mp4
from ochre.io import write_bytes_atomic

# ---- constants ----------------------------------------------------------------------------

WORLD_BLOCKS = 512          # M: wraps around; 400 ticks x 0.2 blocks never reach across
TEXELS = 4                  # R: texels per block edge (Minecraft has 16; 4 is plenty at 64 px)
SEA = 32                    # water surface height, blocks
CLOUD_Y = 100.0             # cloud layer height; terrain is clipped below it
CLOUD_CELL = 8              # blocks per cloud cell
EYE_HEIGHT = 1.62           # Minecraft's eye height above the ground
HALF_WIDTH = 0.3            # half the player's footprint (Minecraft's hitbox is 0.6 wide)
FALL_PER_TICK = 0.8         # the eye drops at most this much per tick (steps up are instant)
WALK_PER_TICK = 0.2         # ~4.3 blocks/s, Minecraft's walking speed
FOV_DEG = 70.0              # horizontal field of view (Minecraft's default)
VIEW_BLOCKS = 64.0          # rays stop here; fog has fully faded terrain into the sky by then
FOG_START = 24.0
NEAR = 0.05                 # near plane, blocks
FINE_DEPTH = 12.0           # per-texel colours nearer than this, per-block means beyond (a mip level)
PITCH_LIMIT_DEG = 60.0      # the policy keeps |pitch| within this; the renderer never clips
LEVEL_PER_TICK = 0.03       # share of the pitch the player takes back each tick (half-life ~1.2 s)
MAX_YAW_DEG, MAX_PITCH_DEG = 6.0, 3.0   # per tick
SEGMENT_TICKS = (5, 40)
PIXELS_PER_BATCH = 1 << 15  # B = this // S^2 frames per batch (8 at 64 px): temporaries stay in
                            # cache and malloc's heap; 4x larger batches page-fault, 1.65x slower

KEY_NAMES = ("forward", "back", "left", "right", "jump", "sneak", "sprint", "attack")
VPT_KEYS = {"forward": "key.keyboard.w", "back": "key.keyboard.s", "left": "key.keyboard.a",
            "right": "key.keyboard.d", "jump": "key.keyboard.space",
            "sneak": "key.keyboard.left.shift", "sprint": "key.keyboard.left.control"}
BEHAVIOURS = ("still", "turn_left", "turn_right", "look_up", "look_down", "look_around",
              "forward", "back", "strafe_left", "strafe_right", "diagonal", "walk_turn")
# Held movement keys of each walking behaviour; "diagonal" picks one of four pairs.
_WALK_KEYS = {"forward": ("forward",), "back": ("back",), "strafe_left": ("left",),
              "strafe_right": ("right",), "walk_turn": ("forward",)}
_DIAGONALS = (("forward", "left"), ("forward", "right"), ("back", "left"), ("back", "right"))

# Biomes; per biome: top-face colour, wall colour (RGB) and texel contrast.
WATER, SAND, GRASS, FOREST, STONE, SNOW, LEAVES = range(7)
_TOP = np.array([[48, 88, 196], [218, 206, 160], [98, 160, 56], [78, 132, 44],
                 [126, 126, 126], [238, 242, 250], [44, 96, 30]], np.float32)
_SIDE = np.array([[48, 88, 196], [206, 192, 146], [134, 96, 67], [120, 86, 60],
                  [112, 112, 112], [120, 120, 124], [38, 84, 26]], np.float32)
_TEXTURE = np.array([0.05, 0.06, 0.12, 0.12, 0.2, 0.04, 0.32], np.float32)   # texel contrast
_SKY_ZENITH = np.array([112, 160, 255], np.float32)
_SKY_HORIZON = np.array([192, 216, 255], np.float32)   # also the fog colour, so terrain fades into it


# ---- world --------------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    height: np.ndarray      # (M, M) float32, whole blocks; water cells sit at SEA
    biome: np.ndarray       # (M, M) int64, WATER ... LEAVES
    top_tex: np.ndarray     # (M*R, M*R, 3) uint8, top-face texels
    top_mean: np.ndarray    # (M, M, 3) float32, per-block mean of top_tex (the far mip level)
    side: np.ndarray        # (M, M, 3) float32, wall colour
    strip: np.ndarray       # (M, M, 3) float32, colour of a wall's top texel row
    wall_amp: np.ndarray    # (M, M) float32, texture contrast of each block's walls
    levels: np.ndarray      # (M*R, M*R) float32 in [-1, 1], texel pattern (walls reuse it)
    clouds: np.ndarray      # (M/CLOUD_CELL,)*2 bool

    @property
    def size(self) -> int:
        return self.height.shape[0]


def _noise(rng: np.random.Generator, n: int, scale: float, beta: float) -> np.ndarray:
    """Periodic fractal noise (n, n) with unit std: white noise shaped by (k^2 + 1/scale^2)^(-beta/2).

    Filtering in Fourier space makes the field periodic, so the world tiles without seams;
    `scale` (blocks) caps the feature size, beta sets how rough it is.
    """
    k2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2      # (n, n/2+1)
    amp = (k2 + scale ** -2.0) ** (-beta / 2)
    amp[0, 0] = 0.0
    field = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, n))) * amp, s=(n, n))
    return field / field.std()


def _terrain(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous height (m, m) in blocks and biome ids (m, m) before trees."""
    hills = 4.0 * _noise(rng, m, 96, 2.8) + 1.2 * _noise(rng, m, 24, 2.2)
    mountains = 24.0 * np.maximum(_noise(rng, m, 128, 3.0) - 0.9, 0.0) ** 1.2
    hc = SEA + 2.0 + hills + mountains        # ~25% of cells under water, median 3 blocks above it
    moisture = _noise(rng, m, 64, 2.6)
    biome = np.where(moisture > 0.45, FOREST, GRASS)
    relief = np.abs(hc - np.roll(hc, 1, 0)) + np.abs(hc - np.roll(hc, 1, 1))
    biome = np.where((hc > SEA + 15) | ((relief > 2.2) & (hc > SEA + 6)), STONE, biome)
    biome = np.where(hc > SEA + 24, SNOW, biome)
    biome = np.where(hc < SEA + 1.5, SAND, biome)
    biome = np.where(hc < SEA - 0.5, WATER, biome)
    return hc, biome


def _trees(rng: np.random.Generator, ground: np.ndarray, biome: np.ndarray) -> np.ndarray:
    """Tree-top heights (m, m), 0 where no tree: rounded blocky canopies on forest and grass.

    A height map has no overhangs, so a tree is a stepped bump of leaves: its centre one block
    above the 4-neighbours, which are one above the diagonal cells.
    """
    density = np.where(biome == FOREST, 0.025, np.where(biome == GRASS, 0.003, 0.0))
    centre = rng.random(ground.shape) < density
    top = np.where(centre, ground + rng.integers(4, 7, ground.shape), 0.0)
    canopy = np.zeros_like(ground)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            shifted = np.roll(top, (du, dv), (0, 1))
            canopy = np.maximum(canopy, np.where(shifted > 0, shifted - abs(du) - abs(dv), 0.0))
    return canopy


def _colours(rng: np.random.Generator, hc: np.ndarray, biome: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-block top colour (m, m, 3) and per-texel texture levels (m*R, m*R) in [-1, 1]."""
    shade = rng.choice(np.array([0.9, 0.95, 1.0, 1.05], np.float32), size=hc.shape)   # a few shades
    # Hill shading (lit from -u, -v) of the smooth terrain: large-scale structure for phase correlation.
    slope = (np.roll(hc, 1, 0) + np.roll(hc, 1, 1) - 2 * hc).clip(-2, 2)
    shade = shade * (1.0 + 0.06 * slope)
    top = _TOP[biome] * shade[..., None]
    depth = np.clip((SEA - hc) / 8.0, 0.0, 1.0)[..., None]              # deep water is darker
    top = np.where((biome == WATER)[..., None], top * (1.0 - 0.45 * depth), top)
    levels = rng.choice(np.array([-1, -0.5, 0, 0.5, 1], np.float32), size=(hc.shape[0] * TEXELS,) * 2)
    return top.astype(np.float32), levels


@functools.lru_cache(maxsize=2)
def make_world(seed: int, size: int = WORLD_BLOCKS) -> World:
    """The world of one seed (all episodes of a seed share it; start positions differ)."""
    rng = np.random.default_rng([seed % 2**64, 0x776F726C64])
    hc, biome = _terrain(rng, size)
    ground = np.where(biome == WATER, SEA, np.round(hc)).clip(0, CLOUD_Y - 10)
    canopy = _trees(rng, ground, biome)
    biome = np.where(canopy > ground, LEAVES, biome)
    height = np.maximum(ground, canopy).astype(np.float32)
    top, levels = _colours(rng, hc, biome)
    # Texels by broadcasting over (M, R, M, R): each block's colour times its texels' texture.
    texture = 1.0 + _TEXTURE[biome][:, None, :, None] * levels.reshape(size, TEXELS, size, TEXELS)
    top_tex = (top[:, None, :, None] * texture[..., None] + 0.5).clip(0, 255).astype(np.uint8)
    top_tex = top_tex.reshape(size * TEXELS, size * TEXELS, 3)
    top_mean = top * texture.mean(axis=(1, 3))[..., None]       # what a mip-map level would hold
    strip = np.where(np.isin(biome, (GRASS, FOREST, SNOW))[..., None], top, _SIDE[biome])
    clouds = _noise(rng, size // CLOUD_CELL, 16, 1.6) > 0.45
    return World(height, biome, top_tex, top_mean, _SIDE[biome], strip.astype(np.float32),
                 _TEXTURE[biome], levels, clouds)


# ---- camera path --------------------------------------------------------------------------

@dataclass(frozen=True)
class Poses:
    """Camera states, each (T,): map position u, v (blocks), eye height, yaw and pitch (degrees)."""

    u: np.ndarray
    v: np.ndarray
    eye: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray

    def __len__(self) -> int:
        return len(self.u)

    def slice(self, start: int, stop: int) -> Poses:
        return Poses(*(a[start:stop] for a in (self.u, self.v, self.eye, self.yaw, self.pitch)))


def ground_height(world: World, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Height (T,) of the highest block under the player's 0.6 x 0.6 footprint centred at (u, v).

    Standing on the whole footprint (like Minecraft's hitbox) keeps the eye at least 0.3 blocks
    from any wall taller than itself: pressed against a wall, a 64 px view would be one flat texel.
    """
    m, r = world.size, HALF_WIDTH
    corners = [world.height[np.floor(u + du).astype(np.int64) % m, np.floor(v + dv).astype(np.int64) % m]
               for du in (-r, r) for dv in (-r, r)]
    return np.max(corners, axis=0).astype(np.float64)


def walk(world: World, camera: np.ndarray, keys: dict[str, np.ndarray],
         start: tuple[float, float, float, float]) -> Poses:
    """Integrate N actions from start (u, v, yaw, pitch) into N + 1 poses.

    Action t turns the camera, then moves 0.2 blocks along the new heading (diagonals normalised,
    as in Minecraft). There is no collision: the player walks over trees and on water, and the
    eye rises at once onto higher blocks but falls at most FALL_PER_TICK (no view inside terrain).
    """
    u0, v0, yaw0, pitch0 = start
    yaw = yaw0 + np.concatenate([[0.0], np.cumsum(camera[:, 1], dtype=np.float64)])    # (N+1,)
    pitch = pitch0 + np.concatenate([[0.0], np.cumsum(camera[:, 0], dtype=np.float64)])
    side = keys["right"].astype(np.float64) - keys["left"]
    ahead = keys["forward"].astype(np.float64) - keys["back"]
    speed = WALK_PER_TICK / np.maximum(np.hypot(side, ahead), 1.0)
    a = np.radians(yaw[1:])
    # forward = (cos a, sin a), right = (-sin a, cos a): a right turn sweeps forward toward right.
    du = (ahead * np.cos(a) - side * np.sin(a)) * speed
    dv = (ahead * np.sin(a) + side * np.cos(a)) * speed
    u = u0 + np.concatenate([[0.0], np.cumsum(du)])
    v = v0 + np.concatenate([[0.0], np.cumsum(dv)])
    # eye_t = max(ground_t + EYE, eye_{t-1} - FALL), unrolled into one running max.
    drop = FALL_PER_TICK * np.arange(len(u))
    eye = np.maximum.accumulate(ground_height(world, u, v) + drop) - drop + EYE_HEIGHT
    return Poses(u, v, eye, yaw, pitch)


# ---- renderer -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Lens:
    size: int
    focal: float            # pixels; the same for rows and columns (square pixels)
    tan_x: np.ndarray       # (S,) horizontal tangent of each column centre's ray
    rows: np.ndarray        # (S,) row centres, pixels
    crossings: int          # grid lines per axis a ray can cross within VIEW_BLOCKS


@functools.lru_cache(maxsize=8)
def _lens(size: int) -> _Lens:
    focal = (size / 2) / math.tan(math.radians(FOV_DEG / 2))
    centres = np.arange(size) + 0.5
    tan_x = (centres - size / 2) / focal
    # Rays are (1, tan_x) in camera axes, so per unit depth they move at most |(1, tan_x)| cells.
    crossings = int(math.ceil(VIEW_BLOCKS * math.hypot(1.0, np.abs(tan_x).max()))) + 1
    return _Lens(size, focal, tan_x, centres, crossings)


def _crossings(origin: np.ndarray, step: np.ndarray, k: int) -> np.ndarray:
    """Depths (B, S, k) where rays origin + step * t cross the next k integer grid lines of one axis."""
    step = np.where(np.abs(step) < 1e-9, 1e-9, step)         # axis-parallel rays: crossings at ~inf
    first = np.where(step > 0, np.floor(origin) + 1 - origin, origin - np.floor(origin))   # (B, S)
    return (first[..., None] + np.arange(k)) / np.abs(step)[..., None]


def _segments(world: World, p: Poses, du: np.ndarray, dv: np.ndarray, k: int):
    """Each ray's walk through the block grid, nearest first: entry/exit depth and cell, (B, S, 2k+1).

    Depth is along the view axis (rays are not normalised), which is what perspective divides by.
    """
    u0, v0 = p.u[:, None, None], p.v[:, None, None]
    t = np.sort(np.concatenate([_crossings(p.u[:, None], du, k), _crossings(p.v[:, None], dv, k)], -1), -1)
    t = np.minimum(t, VIEW_BLOCKS + 1.0)                                    # (B, S, 2k)
    t_in = np.concatenate([np.zeros(t.shape[:2] + (1,)), t], -1)            # (B, S, K)
    t_out = np.concatenate([t, np.full(t.shape[:2] + (1,), VIEW_BLOCKS + 1.0)], -1)
    mid = 0.5 * (t_in + t_out)        # the midpoint names the cell, free of boundary round-off
    cu = np.floor(u0 + du[..., None] * mid)
    cv = np.floor(v0 + dv[..., None] * mid)
    m = world.size
    h = world.height[cu.astype(np.int64) % m, cv.astype(np.int64) % m].astype(np.float64)
    return t_in, t_out, cu, cv, h


def _first_cover(y_top: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Index (B, S, S) [frame, column, row] of the nearest segment covering each pixel; K = none (sky).

    Segment i covers rows at or below its projected top, unless a nearer segment already does:
    pixel y shows the first i with min(y_top[..., :i+1]) <= y. That running minimum falls with
    depth, so one searchsorted over all columns (offset so they never interleave) finds it.
    """
    b, c, k = y_top.shape
    lowest = np.minimum.accumulate(y_top, axis=-1)[..., ::-1].reshape(b * c, k)   # ascending per column
    span = len(rows) + 16.0                               # > the clipped range of y_top
    offset = np.arange(b * c) * span
    flat = (lowest + offset[:, None]).ravel()
    below = np.searchsorted(flat, (offset[:, None] + rows).ravel(), side="right")
    below -= np.repeat(np.arange(b * c) * k, len(rows))   # how many of this column's values are <= y
    return (k - below).reshape(b, c, len(rows))


class _Rays(NamedTuple):
    """Per-pixel view rays, flat (P,): camera position and eye, ray step per unit depth, and how
    many pixels the pixel lies below the horizon (negative above it)."""

    u: np.ndarray
    v: np.ndarray
    eye: np.ndarray
    du: np.ndarray
    dv: np.ndarray
    below: np.ndarray

    def take(self, mask: np.ndarray) -> _Rays:
        return _Rays(*(a[mask] for a in self))


def _sky(world: World, rays: _Rays, focal: float) -> np.ndarray:
    """Sky colour (P, 3): a gradient by elevation, and blocky clouds on a plane at CLOUD_Y."""
    up = -rays.below / focal                                                   # tangent of the elevation
    sky = _SKY_HORIZON + (_SKY_ZENITH - _SKY_HORIZON) * np.clip(up * 1.5, 0.0, 1.0)[:, None]
    reach = (CLOUD_Y - rays.eye) / np.maximum(up, 1e-3)                        # depth to the cloud plane
    cu = np.floor((rays.u + rays.du * reach) / CLOUD_CELL).astype(np.int64)
    cv = np.floor((rays.v + rays.dv * reach) / CLOUD_CELL).astype(np.int64)
    n = world.clouds.shape[0]
    alpha = world.clouds[cu % n, cv % n] * np.where(up > 0.02, 0.85 * np.exp(-reach / 600.0), 0.0)
    return (sky + (255.0 - sky) * alpha[:, None]).astype(np.float32)


def _top_colour(world: World, cu, cv, pu, pv, depth) -> np.ndarray:
    """Top-face colour (P, 3) at exact hit points (pu, pv) inside cells (cu, cv)."""
    m, r = world.size, TEXELS
    iu, iv = cu.astype(np.int64) % m, cv.astype(np.int64) % m
    fu = np.clip(((pu - cu) * r).astype(np.int64), 0, r - 1)        # texel inside the block
    fv = np.clip(((pv - cv) * r).astype(np.int64), 0, r - 1)
    fine = world.top_tex.reshape(-1, 3)[(iu * r + fu) * (m * r) + iv * r + fv]
    coarse = world.top_mean.reshape(-1, 3)[iu * m + iv]
    return np.where((depth < FINE_DEPTH)[:, None], fine.astype(np.float32), coarse)


def _wall_colour(world: World, cu, cv, h, pu, pv, wy, depth) -> np.ndarray:
    """Wall colour (P, 3) at points (pu, pv) on a block's side, world height wy."""
    m, mr = world.size, world.levels.shape[0]
    iu, iv = cu.astype(np.int64) % m, cv.astype(np.int64) % m
    # The wall lies on the grid line the ray crossed: the coordinate nearest an integer names it.
    u_face = np.abs(pu - np.round(pu)) < np.abs(pv - np.round(pv))
    along = np.where(u_face, pv, pu)
    level = world.levels[np.floor(along * TEXELS).astype(np.int64) % mr, np.floor(wy * TEXELS).astype(np.int64) % mr]
    texel = 1.0 + np.where(depth < FINE_DEPTH, world.wall_amp[iu, iv] * level, 0.0)
    base = np.where((h - wy < 1.0 / TEXELS)[:, None], world.strip[iu, iv], world.side[iu, iv])
    # Minecraft's fixed face lighting: tops 1.0, one wall axis 0.8, the other 0.6.
    light = np.where(u_face, 0.8, 0.62) * texel
    return base * light[:, None].astype(np.float32)


def _terrain_colour(world: World, rays: _Rays, focal: float, t_in, cu, cv, h) -> np.ndarray:
    """Colour (P, 3) of terrain pixels, given the ray segment (entry depth, cell, height) covering each."""
    near = np.maximum(t_in, NEAR)
    rel = rays.eye - h
    # On the top face if the pixel is above the cell's near top edge (only when looking down on it).
    top = (rel > 0) & (rays.below * near < focal * rel)
    depth = np.where(top, focal * rel / np.maximum(rays.below, 1e-6), near)   # exact hit depth
    pu, pv = rays.u + rays.du * depth, rays.v + rays.dv * depth
    colour = np.empty((len(h), 3), np.float32)
    colour[top] = _top_colour(world, cu[top], cv[top], pu[top], pv[top], depth[top])
    wall = ~top
    wy = rays.eye[wall] - rays.below[wall] * near[wall] / focal               # world height on the wall
    colour[wall] = _wall_colour(world, cu[wall], cv[wall], h[wall], pu[wall], pv[wall], wy, depth[wall])
    fog = np.clip((depth - FOG_START) / (VIEW_BLOCKS - FOG_START), 0.0, 1.0)[:, None]
    return colour + (_SKY_HORIZON - colour) * fog.astype(np.float32)


def _render_batch(world: World, p: Poses, lens: _Lens) -> np.ndarray:
    """Render B poses -> uint8 (B, S, S, 3)."""
    yaw = np.radians(p.yaw)[:, None]
    du = np.cos(yaw) - np.sin(yaw) * lens.tan_x                                # (B, S) ray per column
    dv = np.sin(yaw) + np.cos(yaw) * lens.tan_x
    horizon = lens.size / 2 - lens.focal * np.tan(np.radians(p.pitch))       # (B,) pitch: a shift
    t_in, t_out, cu, cv, h = _segments(world, p, du, dv, lens.crossings)
    rel = p.eye[:, None, None] - h                                             # (B, S, K)
    near, far = np.maximum(t_in, NEAR), np.maximum(t_out, NEAR)
    y_top = horizon[:, None, None] + lens.focal * np.minimum(rel / near, rel / far)
    y_top = np.where(t_in < VIEW_BLOCKS, y_top, lens.size + 4.0).clip(-4.0, lens.size + 4.0)
    idx = _first_cover(y_top, lens.rows)                                       # (B, S, S)
    b, c, r = (i.ravel() for i in np.indices(idx.shape, sparse=False))       # (P,) each, P = B S S
    rays = _Rays(p.u[b], p.v[b], p.eye[b], du[b, c], dv[b, c], lens.rows[r] - horizon[b])
    k, idx = y_top.shape[-1], idx.ravel()
    hit = idx < k
    seg = ((b * lens.size + c) * k + idx)[hit]                                 # flat segment per pixel
    colour = np.empty((len(idx), 3), np.float32)
    colour[hit] = _terrain_colour(world, rays.take(hit), lens.focal, *(a.ravel()[seg] for a in (t_in, cu, cv, h)))
    colour[~hit] = _sky(world, rays.take(~hit), lens.focal)
    colour = colour.reshape(len(p), lens.size, lens.size, 3).transpose(0, 2, 1, 3)   # (B, rows, cols, 3)
    return np.clip(colour + 0.5, 0, 255).astype(np.uint8)


def render(world: World, poses: Poses, size: int = 64) -> np.ndarray:
    """Render every pose -> uint8 (T, size, size, 3), a few frames at a time."""
    lens = _lens(size)
    out = np.empty((len(poses), size, size, 3), np.uint8)
    batch = max(1, PIXELS_PER_BATCH // (size * size))
    for i in range(0, len(poses), batch):
        out[i:i + batch] = _render_batch(world, poses.slice(i, i + batch), lens)
    return out


def horizon_in_view(pitch: np.ndarray, size: int = 64) -> np.ndarray:
    """Whether the horizon row lies inside the frame at each pitch (degrees): (T,) -> (T,) bool.

    The renderer draws the horizon at row size/2 − focal·tan(pitch); outside the frame a view shows
    only sky or only ground, where turning and walking change little."""
    lens = _lens(size)
    row = lens.size / 2 - lens.focal * np.tan(np.radians(np.asarray(pitch, np.float64)))
    return (row >= 0) & (row < lens.size)


# ---- policy -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Actions:
    camera: np.ndarray              # (N, 2) float64 degrees per tick, [pitch, yaw]
    keys: dict[str, np.ndarray]     # every name in KEY_NAMES -> (N,) uint8 in {0, 1}
    behaviour: np.ndarray           # (N,) int8, index into BEHAVIOURS


def _camera_rates(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    """Camera rates (n, 2) [pitch, yaw] for one segment: ramp up, cruise with jitter, ramp down."""
    pitch = yaw = 0.0
    if name in ("turn_left", "turn_right"):
        yaw = rng.uniform(1.5, MAX_YAW_DEG) * (1.0 if name == "turn_right" else -1.0)
    elif name in ("look_up", "look_down"):
        pitch = rng.uniform(0.75, MAX_PITCH_DEG) * (1.0 if name == "look_down" else -1.0)
    elif name == "look_around":
        pitch = rng.uniform(0.5, 2.5) * rng.choice([-1.0, 1.0])
        yaw = rng.uniform(1.0, 5.0) * rng.choice([-1.0, 1.0])
    elif name == "walk_turn":
        yaw = rng.uniform(1.0, 4.0) * rng.choice([-1.0, 1.0])
    ramp = max(1, min(4, n // 4))
    ticks = np.arange(n)
    envelope = np.minimum(1.0, np.minimum(ticks + 1, n - ticks) / ramp)
    profile = envelope * (1.0 + 0.15 * rng.standard_normal(n))              # smooth-ish, not constant
    rates = np.stack([pitch * profile, yaw * profile], axis=1)
    return np.clip(rates, [-MAX_PITCH_DEG, -MAX_YAW_DEG], [MAX_PITCH_DEG, MAX_YAW_DEG])


def _keep_pitch(rates: np.ndarray, pitch: float, quantum: float | None,
                level: float = LEVEL_PER_TICK) -> tuple[np.ndarray, float]:
    """Add the pull back to level, round to whole `quantum`s (mouse counts) if given, and stop
    pitch at ±PITCH_LIMIT_DEG, tick by tick (the pull depends on the pitch reached).

    People play looking ahead: each tick the player brings the view `level` of the way back to the
    horizon, so a look up or down is brief unless it keeps pushing. The policy, not the renderer,
    enforces all of it, so recorded actions are exactly what the frames show. Returns the
    segment's camera (n, 2) and the pitch after it.
    """
    camera = rates.copy()
    for i in range(len(camera)):
        rate = np.clip(camera[i, 0] - level * pitch, -MAX_PITCH_DEG, MAX_PITCH_DEG)
        if quantum is not None:
            rate = round(rate / quantum) * quantum
            camera[i, 1] = round(camera[i, 1] / quantum) * quantum
        after = pitch + rate
        if abs(after) > PITCH_LIMIT_DEG:
            room = math.copysign(PITCH_LIMIT_DEG, after) - pitch
            rate = room if quantum is None else math.trunc(room / quantum) * quantum
        camera[i, 0] = rate
        pitch += rate
    return camera, pitch


def policy(rng: np.random.Generator, steps: int, *, pitch0: float = 0.0,
           quantum: float | None = None) -> Actions:
    """A structured random player: behaviour segments of 5-40 ticks drawn uniformly from BEHAVIOURS.

    Uniform behaviours keep the mix balanced (the old prototype's data was mostly "forward", and
    its model learned little else). Vertical looks keep the pitch within ±60° and drift back to
    level (`_keep_pitch`): about 9 frames in 10 keep the horizon in view (`horizon_share`).
    quantum: round camera to multiples of it (VPT mouse counts: VPT_DEG_PER_COUNT).
    """
    camera = np.zeros((steps, 2))
    keys = {name: np.zeros(steps, np.uint8) for name in KEY_NAMES}
    behaviour = np.zeros(steps, np.int8)
    t, pitch = 0, pitch0
    while t < steps:
        n = min(int(rng.integers(SEGMENT_TICKS[0], SEGMENT_TICKS[1] + 1)), steps - t)
        name = BEHAVIOURS[int(rng.integers(len(BEHAVIOURS)))]
        rates = _camera_rates(rng, name, n)
        # A look away from the horizon turns back if it would pass the limit, and more often the
        # further the view already is from level (players mostly look ahead; sky-only frames are dull).
        sweep, chance = rates[:, 0].sum(), rng.random()
        if sweep * pitch > 0 and (abs(pitch + sweep) > PITCH_LIMIT_DEG or chance < abs(pitch) / PITCH_LIMIT_DEG):
            rates[:, 0] *= -1.0
            name = {"look_up": "look_down", "look_down": "look_up"}.get(name, name)
        camera[t:t + n], pitch = _keep_pitch(rates, pitch, quantum)
        held = _DIAGONALS[int(rng.integers(4))] if name == "diagonal" else _WALK_KEYS.get(name, ())
        for key in held:
            keys[key][t:t + n] = 1
        behaviour[t:t + n] = BEHAVIOURS.index(name)
        t += n
    return Actions(camera, keys, behaviour)


def action_mix(behaviour: np.ndarray) -> dict[str, float]:
    """Fraction of ticks spent in each behaviour."""
    counts = np.bincount(behaviour, minlength=len(BEHAVIOURS))
    return {name: float(c) / max(1, len(behaviour)) for name, c in zip(BEHAVIOURS, counts)}


# ---- episodes -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Episode:
    frames: np.ndarray              # (N+1, S, S, 3) uint8, states 0..N
    loading: np.ndarray             # (L, S, S, 3) uint8, loading screens before state 0 (MineRL layout)
    camera: np.ndarray              # (N, 2) float64 degrees, [pitch, yaw], exactly what was rendered
    keys: dict[str, np.ndarray]     # KEY_NAMES -> (N,) uint8
    behaviour: np.ndarray           # (N,) int8 into BEHAVIOURS
    poses: Poses                    # N+1 camera states


def _episode_rngs(seed: int, index: int) -> list[np.random.Generator]:
    """Independent streams (start angles, start position, policy, loading screens) from (seed, index)."""
    children = np.random.SeedSequence([seed % 2**64, 1, index]).spawn(4)
    return [np.random.default_rng(c) for c in children]


def episode_actions(seed: int, index: int, steps: int, *,
                    mouse_counts: bool = False) -> tuple[Actions, float, float]:
    """The actions of episode `index` without rendering -> (Actions, yaw0, pitch0).

    mouse_counts: whole VPT mouse counts (the vpt layout); otherwise float32-exact degrees, the
    precision rendered.npz stores, so the frames match the recorded actions bit for bit.
    """
    angle_rng, _, policy_rng, _ = _episode_rngs(seed, index)
    yaw0, pitch0 = float(angle_rng.uniform(0.0, 360.0)), float(angle_rng.uniform(-10.0, 25.0))
    actions = policy(policy_rng, steps, pitch0=pitch0, quantum=VPT_DEG_PER_COUNT if mouse_counts else None)
    if not mouse_counts:
        actions = Actions(actions.camera.astype(np.float32).astype(np.float64), actions.keys, actions.behaviour)
    return actions, yaw0, pitch0


def _start_position(rng: np.random.Generator, world: World) -> tuple[float, float]:
    """A random spot on low land (not sea, mountain or tree top) when one turns up within 64 tries."""
    for _ in range(64):
        u, v = rng.uniform(0.0, world.size, 2)
        if world.biome[int(u), int(v)] in (SAND, GRASS, FOREST):
            break
    return float(u), float(v)


def render_episode(seed: int, index: int, steps: int, size: int = 64, *,
                   mouse_counts: bool = False) -> Episode:
    """Episode `index` of `seed`: policy actions, the camera path and S x S frames (plus loading screens)."""
    world = make_world(seed)
    actions, yaw0, pitch0 = episode_actions(seed, index, steps, mouse_counts=mouse_counts)
    _, place_rng, _, loading_rng = _episode_rngs(seed, index)
    u0, v0 = _start_position(place_rng, world)
    poses = walk(world, actions.camera, actions.keys, (u0, v0, yaw0, pitch0))
    return Episode(render(world, poses, size), loading_frames(loading_rng, size),
                   actions.camera, actions.keys, actions.behaviour, poses)


def loading_frames(rng: np.random.Generator, size: int) -> np.ndarray:
    """1-6 "loading screen" frames (L, S, S, 3): dark dirt tiles, maybe a progress bar; nothing like the world."""
    count = int(rng.integers(1, 7))
    tile = rng.choice(np.array([0.6, 0.8, 1.0, 1.15], np.float32), size=(8, 8))
    reps = -(-size // 8)
    dirt = np.tile(tile, (reps, reps))[:size, :size, None] * np.array([134, 96, 67], np.float32) * 0.3
    frames = np.repeat(dirt[None], count, axis=0)                      # (L, S, S, 3)
    if rng.random() < 0.5:                                             # a filling progress bar
        y, x0, x1 = size * 2 // 3, size // 6, size - size // 6
        for i in range(count):
            frames[i, y:y + max(1, size // 32), x0:x0 + (x1 - x0) * (i + 1) // count] = (128, 255, 128)
    return frames.clip(0, 255).astype(np.uint8)


# ---- writers (DESIGN §3.1) ----------------------------------------------------------------

def _write_folder_atomic(folder: Path, files: dict[str, bytes]) -> None:
    """Write files into a hidden temporary folder beside `folder`, then rename it into place.

    Inside the temporary folder the files carry a `.part` suffix until all are written, so a
    folder left by a crash never looks like a recording to `ochre prepare`'s search.
    """
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; remove it to write this recording again")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for name, data in files.items():
            with open(tmp / f"{name}.part", "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for name in files:
            os.replace(tmp / f"{name}.part", tmp / name)
        os.chmod(tmp, 0o755)                                # mkdtemp makes it private
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_actions(camera: np.ndarray, keys: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate (N, 2) camera and (N,) keys; return every KEY_NAMES entry (missing ones all 0)."""
    n = len(camera)
    if camera.shape != (n, 2):
        raise ValueError(f"camera must be (N, 2) [pitch, yaw] degrees, got {camera.shape}")
    unknown = set(keys) - set(KEY_NAMES)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; known: {', '.join(KEY_NAMES)}")
    full = {name: np.asarray(keys.get(name, np.zeros(n)), np.int64) for name in KEY_NAMES}
    for name, values in full.items():
        if values.shape != (n,) or not np.isin(values, (0, 1)).all():
            raise ValueError(f"key {name!r} must be (N,) = ({n},) in {{0, 1}}, got shape {values.shape}")
    return full


def write_minerl(folder: str | os.PathLike, frames: np.ndarray, camera: np.ndarray,
                 keys: dict[str, np.ndarray], loading: int, *, meta: dict | None = None) -> None:
    """Write one MineRL v0 trajectory folder (recording.mp4, rendered.npz, metadata.json), atomically.

    frames: uint8 (L + N + 1, H, W, 3), the whole video: `loading` = L loading frames, then states
    0..N. camera: (N, 2) degrees per tick [pitch, yaw], stored as float32. keys: names from
    KEY_NAMES -> (N,) in {0, 1}; missing names are all 0. meta: extra metadata.json fields.
    The folder's name is the stream name. Raises FileExistsError if the folder exists.
    """
    folder = Path(folder)
    camera = np.asarray(camera)
    full = _check_actions(camera, keys)
    n = len(camera)
    if len(frames) != loading + n + 1:
        raise ValueError(f"want L + N + 1 = {loading + n + 1} frames for L={loading}, N={n}; got {len(frames)}")
    arrays = {"reward": np.zeros(n, np.float32), "action$camera": camera.astype(np.float32),
              **{f"action${name}": values for name, values in full.items()}}
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    metadata = {"stream_name": folder.name, "duration_steps": n, "duration_ms": n * 1000 // TICKS_PER_SECOND,
                "true_video_frame_count": len(frames), "success": False, "total_reward": 0.0, **(meta or {})}
    _write_folder_atomic(folder, {"recording.mp4": encode_mp4(frames, TICKS_PER_SECOND),
                                  "rendered.npz": npz.getvalue(),
                                  "metadata.json": (json.dumps(metadata, indent=2) + "\n").encode()})


def _vpt_lines(counts: np.ndarray, keys: dict[str, np.ndarray], yaw0: float, pitch0: float) -> list[str]:
    """One VPT contractor JSON line per video frame: N actions, then a null action for the last frame."""
    counts = np.concatenate([counts, np.zeros((1, 2))])                       # (N+1, 2) [dy, dx]
    held = {name: np.append(np.asarray(keys[name]), 0) for name in KEY_NAMES}   # (N+1,) each
    angles = np.concatenate([[[0.0, 0.0]], np.cumsum(counts[:-1], 0)]) * VPT_DEG_PER_COUNT   # before each action
    cursor = np.cumsum(counts, 0)                                             # mouse position, counts
    lines, before = [], set()
    for t in range(len(counts)):
        down = [key for name, key in VPT_KEYS.items() if held[name][t]]
        click = [0] if held["attack"][t] else []
        mouse = {"x": 640.0 + cursor[t, 1], "y": 360.0 + cursor[t, 0], "dx": counts[t, 1], "dy": counts[t, 0],
                 "scaledX": cursor[t, 1], "scaledY": cursor[t, 0], "dwheel": 0.0, "buttons": click,
                 "newButtons": click if t == 0 or not held["attack"][t - 1] else []}
        keyboard = {"keys": down, "newKeys": [k for k in down if k not in before], "chars": ""}
        lines.append(json.dumps({
            "mouse": mouse, "keyboard": keyboard, "isGuiOpen": False, "hotbar": 0,
            "yaw": yaw0 + angles[t, 1], "pitch": pitch0 + angles[t, 0],
            "tick": t, "milli": 1_600_000_000_000 + t * 1000 // TICKS_PER_SECOND}))
        before = set(down)
    return lines


def write_vpt(stem: str | os.PathLike, frames: np.ndarray, camera: np.ndarray, keys: dict[str, np.ndarray],
              *, yaw0: float = 0.0, pitch0: float = 0.0) -> None:
    """Write a VPT contractor pair STEM.jsonl + STEM.mp4 (20 fps, no loading frames).

    frames: uint8 (N + 1, H, W, 3), states 0..N; camera: (N, 2) degrees [pitch, yaw], which must be
    whole mouse counts (multiples of VPT_DEG_PER_COUNT, to 1e-6°) so that [dy, dx] * 0.15 gives it
    back; keys: names from KEY_NAMES -> (N,) in {0, 1} (attack becomes mouse button 0).
    yaw0/pitch0 only feed the informational per-frame yaw/pitch fields. The jsonl is written first
    and the mp4 last, each atomically, so an mp4 on disk always has its jsonl.
    """
    camera = np.asarray(camera, np.float64)
    full = _check_actions(camera, keys)
    if len(frames) != len(camera) + 1:
        raise ValueError(f"want N + 1 = {len(camera) + 1} frames for N={len(camera)} actions; got {len(frames)}")
    counts = np.round(camera / VPT_DEG_PER_COUNT)
    if np.abs(counts * VPT_DEG_PER_COUNT - camera).max(initial=0.0) > 1e-6:
        raise ValueError("camera is not whole VPT mouse counts; quantise it (policy(quantum=VPT_DEG_PER_COUNT))")
    stem = os.fspath(stem)
    lines = _vpt_lines(counts, full, yaw0, pitch0)
    write_bytes_atomic(stem + ".jsonl", ("\n".join(lines) + "\n").encode())
    write_mp4(stem + ".mp4", frames, TICKS_PER_SECOND)


# ---- the command --------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthConfig:
    episodes: int = 16
    steps: int = 400
    seed: int = 0
    layout: str = "minerl"          # "minerl" | "vpt"
    size: int = 64
    workers: int | None = None      # None: all cores

    def __post_init__(self):
        if self.layout not in ("minerl", "vpt"):
            raise ValueError(f"layout must be 'minerl' or 'vpt', got {self.layout!r}")
        if min(self.episodes, self.steps) < 1 or self.size < 8:
            raise ValueError(f"need episodes >= 1, steps >= 1, size >= 8; got {self}")


def episode_name(seed: int, index: int, layout: str) -> str:
    """Stream names shaped like the real ones: MineRL `v3_<words>_<ids>`, VPT `<words>-<ids>`."""
    return f"v3_synth_{seed}_{index:04d}" if layout == "minerl" else f"synth-{seed}-{index:04d}"


def _done(out: Path, cfg: SynthConfig, index: int) -> bool:
    # Both writers rename into place last (the folder; the mp4), so existence means complete.
    name = episode_name(cfg.seed, index, cfg.layout)
    return (out / name).is_dir() if cfg.layout == "minerl" else (out / f"{name}.mp4").is_file()


def _write_episode(job: tuple[Path, SynthConfig, int]) -> int:
    """Render and write one episode (runs in a worker process); returns the video frames written."""
    out, cfg, index = job
    ep = render_episode(cfg.seed, index, cfg.steps, cfg.size, mouse_counts=cfg.layout == "vpt")
    name = episode_name(cfg.seed, index, cfg.layout)
    if cfg.layout == "vpt":
        write_vpt(out / name, ep.frames, ep.camera, ep.keys, yaw0=ep.poses.yaw[0], pitch0=ep.poses.pitch[0])
        return len(ep.frames)
    meta = {"synthetic": {"seed": cfg.seed, "episode": index, "loading_frames": len(ep.loading)}}
    write_minerl(out / name, np.concatenate([ep.loading, ep.frames]), ep.camera, ep.keys, len(ep.loading),
                 meta=meta)
    return len(ep.loading) + len(ep.frames)


def _remove_stale(out: Path, cfg: SynthConfig) -> None:
    """Delete temporaries an interrupted run left behind (hidden `.<episode name>...tmp` entries)."""
    prefix = episode_name(cfg.seed, 0, cfg.layout)[:-4]
    for path in out.glob(f".{prefix}*.tmp"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _mapper(workers: int):
    """`map` in this process for one worker, else a process pool's ordered imap (ended on exit)."""
    if workers == 1:
        yield map
        return
    # spawn, not fork: the caller may hold torch's threads (`ochre demo` runs synth in-process).
    pool = multiprocessing.get_context("spawn").Pool(workers)
    try:
        yield pool.imap
    finally:
        pool.terminate()


def synthesize(out: str | os.PathLike, cfg: SynthConfig, *, progress: bool = True) -> dict:
    """Write cfg.episodes recordings into `out`, skipping complete ones; returns a summary dict."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale(out, cfg)
    todo = [(out, cfg, i) for i in range(cfg.episodes) if not _done(out, cfg, i)]
    workers = max(1, min(cfg.workers or _cpu_count(), len(todo)))
    start, frames = time.perf_counter(), 0
    with _mapper(workers) as mapper:
        for n in tqdm(mapper(_write_episode, todo), total=len(todo), unit="episode", desc="synth",
                      disable=not progress):
            frames += n
    seconds = time.perf_counter() - start
    return {"episodes": cfg.episodes, "written": len(todo), "skipped": cfg.episodes - len(todo),
            "frames": frames, "seconds": seconds, "frames_per_s": frames / max(seconds, 1e-9),
            "workers": workers, "mix": dataset_mix(cfg),
            "horizon_share": horizon_share(cfg)}


def dataset_mix(cfg: SynthConfig) -> dict[str, float]:
    """Behaviour proportions over all ticks of all episodes (policy only: no rendering)."""
    behaviour = [episode_actions(cfg.seed, i, cfg.steps, mouse_counts=cfg.layout == "vpt")[0].behaviour
                 for i in range(cfg.episodes)]
    return action_mix(np.concatenate(behaviour))


def horizon_share(cfg: SynthConfig) -> float:
    """Share of all frames (states) whose view holds the horizon (policy only: no rendering)."""
    inside = []
    for i in range(cfg.episodes):
        actions, _, pitch0 = episode_actions(cfg.seed, i, cfg.steps, mouse_counts=cfg.layout == "vpt")
        pitch = pitch0 + np.concatenate([[0.0], np.cumsum(actions.camera[:, 0])])   # as walk() integrates it
        inside.append(horizon_in_view(pitch, cfg.size))
    return float(np.concatenate(inside).mean())


def run(args) -> int:
    """`ochre synth OUT ...`: flags -> SynthConfig -> synthesize -> a short report."""
    cfg = SynthConfig(args.episodes, args.steps, args.seed, args.layout, args.size, args.workers)
    s = synthesize(args.out, cfg)
    print(f"synth: {s['written']} episodes written, {s['skipped']} already complete -> {args.out} "
          f"({cfg.layout} layout, {cfg.size}x{cfg.size}, {cfg.steps} steps)")
    print(f"  {s['frames']} video frames rendered and encoded in {s['seconds']:.1f} s: "
          f"{s['frames_per_s']:.0f} frames/s "
          f"with {s['workers']} worker(s)")
    print("  action mix: " + ", ".join(f"{k} {v:.1%}" for k, v in s["mix"].items()))
    print(f"  horizon in view: {s['horizon_share']:.1%} of frames")
    return 0
