"""What direction discovery samples, renders and measures: a generator as a *source* (random
identities w, ws → uint8 images), a face measure's readings of a batch, and moves of held-out faces
along a direction (``ws0 + t·stdev·mask·v``: t in units of the direction).

Shared by :mod:`engine.latent.discover` (regression, layer choice) and
:mod:`engine.latent.calibrate` (what one unit of a direction moves).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from engine.frames import images_to_uint8
from engine.latent.direction_set import Direction
from engine.latent.identity import rest_z
from engine.latent.latent_basis import generator_hash

__all__ = ["GeneratorSource", "as_source", "Readings", "read", "moved", "score_move", "render_measure",
           "PROBE_SIGMA"]

#: the move used to measure a direction: ±2 units (standard deviations unless calibrated)
PROBE_SIGMA = 2.0


# -- sources: what discovery samples and renders ---------------------------------------------------
class GeneratorSource:
    """A StyleGAN2 ``Generator`` as a discovery source: random z → w (``truncation_psi``; z at rest,
    :func:`engine.latent.identity.rest_z`, as the engine's identities are), ws [B, num_ws, w_dim] →
    uint8 images [B, H, W, 3]."""

    def __init__(self, G, *, truncation_psi: float = 1.0, batch: int = 32, checkpoint_hash: Optional[str] = None):
        self.G = G
        self.num_ws, self.w_dim, self.z_dim = int(G.num_ws), int(G.w_dim), int(G.z_dim)
        self.truncation_psi = float(truncation_psi)
        self.batch = int(batch)
        self.checkpoint_hash = checkpoint_hash or generator_hash(G)
        self.device = G.mapping.w_avg.device

    @torch.no_grad()
    def sample_w(self, n: int, seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(int(seed))
        out = []
        for start in range(0, n, self.batch):
            z = rest_z(self.G, torch.randn(min(self.batch, n - start), self.z_dim, generator=gen)).to(self.device)
            out.append(self.G.mapping(z, truncation_psi=self.truncation_psi)[:, 0].double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.w_dim))

    @torch.no_grad()
    def render(self, ws: np.ndarray) -> np.ndarray:
        ws = torch.as_tensor(np.asarray(ws), dtype=torch.float32)
        out = []
        for start in range(0, len(ws), self.batch):
            img = self.G.synthesis(ws[start:start + self.batch].to(self.device), noise_mode="const")
            out.append(images_to_uint8(img))
        return np.concatenate(out)


def as_source(generator, *, truncation_psi: float = 1.0, batch: int = 32):
    """Any generator as a discovery source: an object with ``sample_w(n, seed)``, ``render(ws)``,
    ``num_ws``, ``w_dim`` and ``checkpoint_hash`` is used as is (a callable test generator); a
    StyleGAN2 ``Generator`` is wrapped in :class:`GeneratorSource`."""
    if all(hasattr(generator, a) for a in ("sample_w", "render", "num_ws", "w_dim")):
        return generator
    if hasattr(generator, "mapping") and hasattr(generator, "synthesis"):
        return GeneratorSource(generator, truncation_psi=truncation_psi, batch=batch)
    raise TypeError("a generator must be a StyleGAN2 Generator or have sample_w(n, seed), render(ws), "
                    "num_ws and w_dim")


# -- measuring moves ---------------------------------------------------------------------------
@dataclass
class Readings:
    values: dict            # key -> [B]
    embed: Optional[np.ndarray]


def read(measure, images: np.ndarray) -> Readings:
    vals = {k: np.asarray(v, dtype=np.float64) for k, v in measure(images).items()}
    emb = None
    if hasattr(measure, "embed"):
        emb = np.asarray(measure.embed(images), dtype=np.float64)
    return Readings(vals, emb)


def moved(ws0: np.ndarray, d: Direction, num_ws: int, t: float, layers: Optional[tuple[int, int]]) -> np.ndarray:
    mask = Direction(d.name, d.vector, d.stdev, layers=layers).layer_mask(num_ws).astype(np.float64)
    return ws0 + t * d.stdev * mask[None, :, None] * d.vector.astype(np.float64)[None, None, :]


def score_move(base: Readings, lo: Readings, hi: Readings, key: str, keys_sd: Mapping[str, float],
                role_keys: Mapping[str, str], role: str, identity_scale: float) -> dict:
    span = 2 * PROBE_SIGMA
    delta = {k: (hi.values[k] - lo.values[k]) / span for k in role_keys.values()}
    ok = np.isfinite(delta[key])
    gain = float(np.nanmean(delta[key])) if ok.any() else float("nan")
    gain_sd = gain / keys_sd[key] if keys_sd[key] > 0 else float("nan")
    leak = {}
    for r, k in role_keys.items():
        if r != role:
            leak[r] = float(np.nanmean(np.abs(delta[k]))) / keys_sd[k] if np.isfinite(delta[k]).any() and keys_sd[k] > 0 \
                else float("nan")
    ident = float("nan")
    if base.embed is not None:
        dist = np.concatenate([np.linalg.norm(lo.embed - base.embed, axis=1), np.linalg.norm(hi.embed - base.embed, axis=1)])
        ident = float(np.nanmean(dist)) if np.isfinite(dist).any() else float("nan")
    worst_leak = max([v for v in leak.values() if np.isfinite(v)], default=0.0)
    keep = max(0.0, 1.0 - ident / identity_scale) if np.isfinite(ident) else 1.0
    score = gain_sd * keep - worst_leak if np.isfinite(gain_sd) else -math.inf
    return {"gain_per_sigma": gain, "gain_per_sigma_scaled": gain_sd, "identity_distance_2sigma": ident,
            "leakage": leak, "read": int(ok.sum()), "score": float(score)}


def render_measure(src, measure, w: np.ndarray, batch: int, bar, times: dict, stop_early: bool = False):
    """Render w [N, w_dim] (every layer) and measure: ({key: [N]}, detected bool [N]); with
    ``stop_early``, stops after 64 images without one detected face (fewer rows come back)."""
    num_ws, w_dim = int(src.num_ws), int(src.w_dim)
    values: dict[str, list] = {}
    detected = []
    for start in range(0, len(w), batch):
        t0 = time.perf_counter()
        wb = w[start:start + batch]
        imgs = src.render(np.ascontiguousarray(np.broadcast_to(wb[:, None, :], (len(wb), num_ws, w_dim))))
        t1 = time.perf_counter()
        vals = measure(imgs)
        det = measure.detected(imgs) if hasattr(measure, "detected") else \
            np.all([np.isfinite(np.asarray(vals[k], np.float64)) for k in measure.roles], axis=0)
        times["render"] += t1 - t0
        times["measure"] += time.perf_counter() - t1
        times["images"] += len(wb)
        for k, v in vals.items():
            values.setdefault(k, []).append(np.asarray(v, dtype=np.float64).reshape(-1))
        detected.append(np.asarray(det, dtype=bool).reshape(-1))
        bar.update(len(wb))
        if stop_early and start + batch >= 64 and not np.concatenate(detected).any():
            break
    return {k: np.concatenate(v) for k, v in values.items()}, np.concatenate(detected)
