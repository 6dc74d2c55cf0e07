"""What one unit of a discovered direction means: the motion the shipped drivers mean by it.

A discovered direction's first unit is the spread of the identities along it (σ). That is a fact
about the generator's faces, not about motion: on the demo generator, the discovered
``mouth_open`` opens the mouth by a fifth of what the learned one does at the same x, and an
audio model trained on the learned directions (x ≈ 0…3 while speaking) then barely moves the
lips. Calibration rescales each direction so that ``UNIT_AT`` units change the role's measured
value by the same fraction of a full motion (``measure.scales``) as the directions the shipped
audio model was trained on: the same x opens the mouth as far on any generator, whatever its
latent space.

``UNIT_MOTION`` holds those fractions, measured with the demo probes on the shipped learned demo
directions (``tests/engine/latent/test_calibrate.py`` checks them against the shipped set). Roles without an
entry (the ones no shipped audio model drives: head pose, blinks, gaze) keep σ units. The search is
monotone bisection on held-out faces; one unit is kept within ``MIN_SIGMA``…``MAX_SIGMA`` σ
(further, the moved faces leave the generator's faces), and a role whose target is not reached
within that is marked ``capped`` in the report.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from engine.latent.direction_set import Direction, DirectionSet
from engine.latent.sources import Readings, moved, read

__all__ = ["UNIT_MOTION", "UNIT_AT", "MIN_SIGMA", "MAX_SIGMA", "calibrate", "response"]

#: {role: (side, fraction)}: ``UNIT_AT`` units change the role's measured value by ``fraction`` of
#: a full motion. side ``"open"``: m(+t) − m(0) (a mouth opens from rest; it does not close further),
#: ``"both"``: (m(+t) − m(−t)) / 2. Measured on the shipped learned demo directions with the probes
#: (demo world v2), 44 held-out faces in two samples (seeds 7 and 99 of ``sample_w``): mouth_open
#: 0.007 → 0.605 at +2, mouth width 0.22 / 0.91 at ∓2 (v1's were 0.56 and 0.33).
UNIT_MOTION: dict[str, tuple[str, float]] = {"mouth_open": ("open", 0.60), "jaw": ("both", 0.35)}
#: the units at which the motion is matched: a speaking mouth (x ≈ 2 on the learned demo directions)
UNIT_AT = 2.0
#: one unit is kept within these multiples of the identities' spread along the direction
MIN_SIGMA, MAX_SIGMA = 0.25, 6.0


def response(src, measure, d: Direction, key: str, ws0: np.ndarray, base: Readings, t: float,
             side: str) -> tuple[float, Readings, Optional[Readings]]:
    """The mean change of ``key`` when the faces ``ws0`` move ``t`` units along ``d`` (its layers):
    ``(change, readings at +t, readings at −t or None)``."""
    num_ws = int(src.num_ws)
    hi = read(measure, src.render(moved(ws0, d, num_ws, t, d.layers)))
    if side == "open":
        return float(np.nanmean(hi.values[key] - base.values[key])), hi, None
    if side != "both":
        raise ValueError(f"side must be 'open' or 'both', got {side!r}")
    lo = read(measure, src.render(moved(ws0, d, num_ws, -t, d.layers)))
    return float(np.nanmean(hi.values[key] - lo.values[key]) / 2), hi, lo


def _identity(base: Readings, *moved_readings: Optional[Readings]) -> float:
    if base.embed is None:
        return float("nan")
    dist = [np.linalg.norm(r.embed - base.embed, axis=1) for r in moved_readings if r is not None]
    dist = np.concatenate(dist) if dist else np.zeros(0)
    return float(np.nanmean(dist)) if np.isfinite(dist).any() else float("nan")


def calibrate(src, measure, ds: DirectionSet, role_keys: Mapping[str, str], ws0: np.ndarray, base: Readings,
              scales: Mapping[str, float], *, table: Mapping[str, tuple[str, float]] = UNIT_MOTION,
              at: float = UNIT_AT, min_sigma: float = MIN_SIGMA, max_sigma: float = MAX_SIGMA,
              steps: int = 8) -> tuple[DirectionSet, dict]:
    """``(directions with calibrated stdev, {role: report})`` for the roles in ``table``; the others
    are returned unchanged with ``{"unit": "sigma"}``.

    For role r with ``(side, f)`` the unit u (in σ) is found with ``response(at·u) = f·scales[key]``
    by bisection in log u over ``[min_sigma, max_sigma]`` (``steps`` halvings); the report gives
    the unit in σ, the target, the change reached, the identity distance at ``at`` units and
    whether the bound was hit (``capped``)."""
    out, info = DirectionSet(), {}
    for d in ds:
        spec = table.get(d.name)
        if spec is None:
            out.add(d, checkpoint_hash=ds.checkpoint_hash)
            info[d.name] = {"unit": "sigma"}
            continue
        side, frac = spec
        key = role_keys[d.name]
        target = float(frac) * float(scales[key])

        def at_unit(u: float):
            return response(src, measure, Direction(d.name, d.vector, d.stdev * u, layers=d.layers), key,
                            ws0, base, at, side)

        lo_u, hi_u = float(min_sigma), float(max_sigma)
        r_hi = at_unit(hi_u)
        capped = None
        if not (r_hi[0] >= target):                       # not reached (or NaN) at the largest unit
            u, best, capped = hi_u, r_hi, "max"
        else:
            r_lo = at_unit(lo_u)
            if r_lo[0] >= target:                         # already past it at the smallest unit
                u, best, capped = lo_u, r_lo, "min"
            else:
                best, u = r_hi, hi_u
                for _ in range(int(steps)):
                    mid = math.sqrt(lo_u * hi_u)
                    r_mid = at_unit(mid)
                    if r_mid[0] >= target:
                        hi_u, best, u = mid, r_mid, mid
                    else:
                        lo_u = mid
        out.add(Direction(d.name, d.vector, d.stdev * u, layers=d.layers, origin=d.origin,
                          source=(d.source or "") + f"; unit calibrated: {at:g} units = {frac:g} of a full {key}"),
                checkpoint_hash=ds.checkpoint_hash)
        info[d.name] = {"unit": "calibrated", "side": side, "fraction": float(frac), "at_units": float(at),
                        "target": target, "reached": best[0], "sigma_per_unit": float(u), "stdev_sigma": d.stdev,
                        "identity_distance_at_units": _identity(base, best[1], best[2]), "capped": capped}
    return out, info
