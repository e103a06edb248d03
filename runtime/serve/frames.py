"""Frame encodings a player can ask for with `/play?format=…` (docs/serve.md).

Legend: H W pixels (64), a frame is uint8 (H, W, 3), RGB, row-major.

`raw` is the frame's bytes as they are (always there: bots and tests read it with no decoder).
`png` is lossless through ochre.images (zlib only). `jpeg` and `webp` need Pillow (the `[serve]`
extra). Sizes and encode times at 64×64 are in bench/results/serve_encoding_cpu_2026-12-02.json
(`python -m ochre.bench.serve_encoding`); the page asks for PAGE_FORMAT, chosen there.
"""

from __future__ import annotations

import io

import numpy as np

from ochre.images import encode_png

FORMATS = ("raw", "png", "jpeg", "webp")
MIME = {"raw": "application/octet-stream", "png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
JPEG_QUALITY = 90              # with 4:4:4 colour: chroma subsampling smears the model's 4-pixel code edges
WEBP_QUALITY = 90
# The page's format: a fifth of raw's or PNG's bytes (the sampled detail of a dream leaves zlib little to
# find) at less than half PNG's encode time; WebP is smaller still but slower to encode than both.
PAGE_FORMAT = "jpeg"


def _pillow(image: np.ndarray, **save):
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("jpeg and webp frames need Pillow: pip install 'ochre[serve]'") from None
    out = io.BytesIO()
    Image.fromarray(image, "RGB").save(out, **save)
    return out.getvalue()


def encode(image: np.ndarray, fmt: str) -> bytes:
    """uint8 (H, W, 3) -> the bytes of one binary frame message in `fmt`."""
    if fmt == "raw":
        return np.ascontiguousarray(image).tobytes()
    if fmt == "png":
        return encode_png(image)
    if fmt == "jpeg":
        return _pillow(image, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    if fmt == "webp":
        return _pillow(image, format="WEBP", quality=WEBP_QUALITY, method=0)
    raise ValueError(f"unknown frame format {fmt!r}; choose from {', '.join(FORMATS)}")


def available() -> tuple[str, ...]:
    """The formats this install can encode (jpeg and webp need Pillow)."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        return ("raw", "png")
    return FORMATS
