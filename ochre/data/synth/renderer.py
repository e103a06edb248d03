"""`render(world, poses, size)`: an exact heightmap ray caster, vectorised in numpy.

Each screen column's ray walks the block grid (every cell boundary crossing, in order); the
first cell whose projected top lies above a pixel colours it (the "voxel space" rule), so block
tops and walls have exact edges. Pitch shifts the horizon line (a pure vertical shift), yaw
rotates the rays. Fog fades terrain into the sky colour.
Legend: B frames per render batch, S image size (S x S), K ray segments per column, P pixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ochre.data.synth.world import CLOUD_CELL, CLOUD_Y, TEXELS, Poses, World

FOV_DEG = 70.0              # horizontal field of view (Minecraft's default)
VIEW_BLOCKS = 64.0          # rays stop here; fog has fully faded terrain into the sky by then
FOG_START = 24.0
NEAR = 0.05                 # near plane, blocks
FINE_DEPTH = 12.0           # per-texel colours nearer than this, per-block means beyond (a mip level)
PIXELS_PER_BATCH = 1 << 15  # B = this // S^2 frames per batch (8 at 64 px): temporaries stay in
                            # cache and malloc's heap; 4x larger batches page-fault, 1.65x slower
_SKY_ZENITH = np.array([112, 160, 255], np.float32)
_SKY_HORIZON = np.array([192, 216, 255], np.float32)   # also the fog colour, so terrain fades into it


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
    for array in (tan_x, centres):              # shared through the cache: read-only
        array.setflags(write=False)
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
