"""The synthetic world and how a player moves through it.

`make_world(seed)`: a periodic (tiling) 512x512-block height map quantised to whole blocks, with
biomes (water, sand, grass, forest with blocky trees, stone, snow), a per-texel colour map (4x4
texels per block face) and a cloud layer. `walk` integrates actions into camera poses on it:
Minecraft's walking speed, eye height and footprint, no collisions.
Legend: M world size in blocks, R texels per block edge, N actions, T poses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

WORLD_BLOCKS = 512          # M: wraps around; 400 ticks x 0.2 blocks never reach across
TEXELS = 4                  # R: texels per block edge (Minecraft has 16; 4 is plenty at 64 px)
SEA = 32                    # water surface height, blocks
CLOUD_Y = 100.0             # cloud layer height; terrain is clipped below it
CLOUD_CELL = 8              # blocks per cloud cell
EYE_HEIGHT = 1.62           # Minecraft's eye height above the ground
HALF_WIDTH = 0.3            # half the player's footprint (Minecraft's hitbox is 0.6 wide)
FALL_PER_TICK = 0.8         # the eye drops at most this much per tick (steps up are instant)
WALK_PER_TICK = 0.2         # ~4.3 blocks/s, Minecraft's walking speed

# Biomes; per biome: top-face colour, wall colour (RGB) and texel contrast.
WATER, SAND, GRASS, FOREST, STONE, SNOW, LEAVES = range(7)
_TOP = np.array([[48, 88, 196], [218, 206, 160], [98, 160, 56], [78, 132, 44],
                 [126, 126, 126], [238, 242, 250], [44, 96, 30]], np.float32)
_SIDE = np.array([[48, 88, 196], [206, 192, 146], [134, 96, 67], [120, 86, 60],
                  [112, 112, 112], [120, 120, 124], [38, 84, 26]], np.float32)
_TEXTURE = np.array([0.05, 0.06, 0.12, 0.12, 0.2, 0.04, 0.32], np.float32)   # texel contrast


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

    def __post_init__(self):
        for array in vars(self).values():       # shared by every caller of make_world's cache: read-only
            array.setflags(write=False)

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

    def take(self, indices: np.ndarray) -> Poses:
        return Poses(*(a[indices] for a in (self.u, self.v, self.eye, self.yaw, self.pitch)))

    def pose(self, t: int) -> tuple[float, float, float, float, float]:
        """State t as (u, v, eye, yaw, pitch)."""
        return tuple(float(a[t]) for a in (self.u, self.v, self.eye, self.yaw, self.pitch))


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
         start: tuple[float, float, float, float], eye: float | None = None) -> Poses:
    """Integrate N actions from start (u, v, yaw, pitch) into N + 1 poses.

    Action t turns the camera, then moves 0.2 blocks along the new heading (diagonals normalised,
    as in Minecraft). There is no collision: the player walks over trees and on water, and the
    eye rises at once onto higher blocks but falls at most FALL_PER_TICK (no view inside terrain).
    eye: the start's eye height when it is known (a pose taken from another path, maybe mid-fall);
    by default the player stands on the ground at the start.
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
    eyes = np.maximum.accumulate(ground_height(world, u, v) + drop) - drop + EYE_HEIGHT
    if eye is not None:                   # a start above the ground falls from there
        eyes = np.maximum(eyes, eye - drop)
    return Poses(u, v, eyes, yaw, pitch)
