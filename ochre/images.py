"""Image helpers without an imaging dependency: PNG writing and comparison grids."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from ochre.io import write_bytes_atomic


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes (8-bit RGB, no filtering: small images, zlib does the rest)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"want uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * 3)], axis=1)   # filter byte 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


def save_png(path: str | Path, image: np.ndarray) -> None:
    write_bytes_atomic(path, encode_png(image))


def grid(rows: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Rows of images, each uint8 (N, H, W, 3) with the same N, H, W -> one (rows*H', N*W', 3) image."""
    n, h, w, _ = rows[0].shape
    out = np.full((len(rows) * (h + pad) + pad, n * (w + pad) + pad, 3), 255, np.uint8)
    for r, images in enumerate(rows):
        for c, img in enumerate(images):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = img
    return out
