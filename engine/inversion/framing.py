"""Where a generator puts the face in its image: the FFHQ recipe's square, or a measured one.

FFHQ-trained generators frame faces exactly as the FFHQ alignment crops them, so a photo aligned
with :func:`engine.faces.align.align_face` matches them as is. Another generator (the demo world's
renderer frames faces its own way) gets a *template*: the mean FFHQ quad of its own faces'
landmarks, as fractions of its image side, and photos are aligned so their quad lands there.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["measure_template", "template_for"]

_cache: dict[str, np.ndarray] = {}


@torch.no_grad()
def measure_template(G, n: int = 24, aligned: str = "demo", seed: int = 0) -> np.ndarray:
    """The mean FFHQ quad [4, 2] (fractions of the side) of ``n`` of ``G``'s faces (seeds at rest,
    truncation 0.7), their landmarks read by dlib (in the ``aligned`` box where the detector misses)."""
    from engine.faces import FaceMeasure, ffhq_quad
    from engine.frames import images_to_uint8
    from engine.latent.identity import w_from_seed

    measure = FaceMeasure(aligned=aligned, embed=False)
    quads = []
    for s in range(seed, seed + n):
        img = images_to_uint8(G.synthesis(w_from_seed(G, s, truncation_psi=0.7)))[0]
        reading = measure.read(img, embed=False)
        if reading.found:
            quads.append(ffhq_quad(reading.landmarks) / G.img_resolution)
    if len(quads) < max(3, n // 4):
        raise ValueError(f"could not read enough of the generator's faces ({len(quads)} of {n}) to frame photos for it")
    return np.median(np.stack(quads), axis=0)


def template_for(G, name: str, checkpoint_hash: str) -> Optional[np.ndarray]:
    """The template to align photos to for this generator: None (the FFHQ square) for any
    generator but the demo, whose faces' framing is measured once per process."""
    if name != "demo":
        return None
    if checkpoint_hash not in _cache:
        _cache[checkpoint_hash] = measure_template(G)
    return _cache[checkpoint_hash]
