"""Name a generator's latent directions by what they do to the rendered face (InterFaceGAN-style).

For N random identities the generator's w and image are taken; a measuring function (the demo
world's probes, :mod:`engine.demo_world.probes`) reads each image's motion values (mouth opening,
blink, yaw, ...). Per measured attribute a ridge regression ``value ≈ a·(w − mean) + b`` gives
the W direction that changes it most linearly, ``v = a / ‖a‖``; directions are made orthogonal
in priority order (head pose first, then mouth and eyes), so moving the mouth does not turn the
head (the regression itself is :func:`engine.latent.discover.fit_directions`; ``python -m
engine.directions discover`` is the measure-agnostic tool, with the layer choice). The direction's stdev is the spread of the data along it (one x unit = one standard
deviation of w along v, like a global PCA basis), and ``r2`` says how well w predicts the
attribute linearly. The result is a :class:`~engine.latent.direction_set.DirectionSet` with the
motion roles' names, which every driver uses.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from engine.frames import images_to_uint8
from engine.latent import discover
from engine.latent.direction_set import DirectionSet

__all__ = ["fit_directions", "sample_measurements", "ROLE_OF", "PRIORITY"]

#: probe output → motion role of engine.motion.base.ROLES
ROLE_OF = {"yaw": "head_yaw", "pitch": "head_pitch", "roll": "head_roll", "mouth_open": "mouth_open",
           "mouth_width": "jaw", "blink": "blink", "gaze_x": "gaze_x", "gaze_y": "gaze_y"}
#: orthogonalisation order: earlier attributes keep their direction, later ones are made orthogonal
PRIORITY = ("yaw", "pitch", "roll", "mouth_open", "blink", "mouth_width", "gaze_x", "gaze_y")


@torch.no_grad()
def sample_measurements(G, measure: Callable[[np.ndarray], Mapping[str, np.ndarray]], n: int, *,
                        seed: int = 0, batch: int = 64, truncation_psi: float = 1.0) -> tuple[np.ndarray, dict]:
    """w [n, w_dim] float64 of random z, and ``measure(images uint8 [B, H, W, 3])`` per attribute."""
    gen = torch.Generator().manual_seed(int(seed))
    ws, values = [], {}
    dev = G.mapping.w_avg.device
    for start in range(0, n, batch):
        b = min(batch, n - start)
        z = torch.randn(b, G.z_dim, generator=gen).to(dev)
        w = G.mapping(z, truncation_psi=truncation_psi)
        img = G.synthesis(w, noise_mode="const")
        for k, v in measure(images_to_uint8(img)).items():
            values.setdefault(k, []).append(np.asarray(v, dtype=np.float64).reshape(-1))
        ws.append(w[:, 0].double().cpu().numpy())
    return np.concatenate(ws), {k: np.concatenate(v) for k, v in values.items()}


def fit_directions(w: np.ndarray, values: Mapping[str, np.ndarray], *, ridge: float = 1e-3,
                   attributes: Optional[Sequence[str]] = None, checkpoint_hash: Optional[str] = None,
                   layers: Optional[Mapping[str, tuple[int, int]]] = None) -> tuple[DirectionSet, dict]:
    """A DirectionSet with one direction per probe attribute (named by :data:`ROLE_OF`) and a report
    ``{attribute: {"role", "r2", "stdev", "cos_before_orth"}}``: the across-identity regression of
    :func:`engine.latent.discover.fit_directions` with the probes' attribute names.

    ``w`` [N, w_dim]; ``values[attr]`` [N]. ``ridge`` is relative to the mean eigenvalue of the
    w covariance. ``layers``: optional layer range per role.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] < w.shape[1] + 2:
        raise ValueError(f"need w [N, w_dim] with N > w_dim + 1 samples, got {w.shape}")
    attrs = [a for a in PRIORITY if a in values] if attributes is None else list(attributes)
    for a in attrs:
        if a not in ROLE_OF:
            raise ValueError(f"no motion role for attribute {a!r} (known: {', '.join(ROLE_OF)})")
        if a not in values:
            raise ValueError(f"no measurements of {a!r}")
    ds, rep = discover.fit_directions(w, {a: values[a] for a in attrs}, {a: ROLE_OF[a] for a in attrs}, ridge=ridge,
                                      checkpoint_hash=checkpoint_hash, origin="probe-regression", layers=layers)
    report = {r["key"]: {"role": role, "r2": r["r2"], "stdev": r["stdev"], "cos_before_orth": r["cos_before_orth"]}
              for role, r in rep.items()}
    return ds, report
