"""Image grids as PNG bytes, for trial artifacts and reports."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    a = np.nan_to_num(a, nan=-1.0)
    a = np.clip((a + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return a.transpose(0, 2, 3, 1)


def grid_png(
    images: torch.Tensor | np.ndarray, *, ncol: int | None = None, pad: int = 1, min_cell: int = 28
) -> bytes:
    """A PNG of images (N, C, H, W) in [-1, 1] tiled in a grid; small images are enlarged.

    >>> grid_png(torch.zeros(4, 1, 8, 8))[:4]
    b'\\x89PNG'
    """
    a = to_uint8(images)
    n, h, w, c = a.shape
    ncol = ncol or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
        ] = a[i]
    img = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = max(1, math.ceil(min_cell / max(h, w)))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
