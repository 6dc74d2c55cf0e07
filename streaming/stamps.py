"""Frame stamps: a frame's index written into its pixels, so tests and benchmarks identify frames
after a lossy codec (and measure end-to-end latency per frame)."""
from __future__ import annotations

import numpy as np

__all__ = ["STAMP_BITS", "stamp_index", "read_stamp"]

STAMP_BITS = 16


def _stamp_geometry(width: int, height: int) -> tuple[int, int]:
    block = max(4, width // STAMP_BITS)
    return block, height - block


def stamp_index(image: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` (16 bits) as black/white blocks along the bottom edge of an RGB image (copy)."""
    img = np.array(image, copy=True)
    h, w = img.shape[:2]
    block, top = _stamp_geometry(w, h)
    for bit in range(STAMP_BITS):
        value = 255 if (int(index) >> bit) & 1 else 0
        img[top:top + block, bit * block:(bit + 1) * block] = value
    return img


def read_stamp(image: np.ndarray) -> int:
    """Read the index written by :func:`stamp_index` from a decoded RGB (or gray) image."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img.mean(axis=2)
    h, w = img.shape
    block, top = _stamp_geometry(w, h)
    q = max(1, block // 4)
    value = 0
    for bit in range(STAMP_BITS):
        cell = img[top + q:top + block - q, bit * block + q:(bit + 1) * block - q]
        if cell.mean() > 127:
            value |= 1 << bit
    return value
