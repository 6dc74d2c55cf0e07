"""Discover a generator's named motion directions with any face measure (InterFaceGAN-style
regression + a measured choice of layers).

For ``n`` random identities the generator's w and image are taken and a **measure** reads each
image's motion values. A measure is any callable::

    measure(images uint8 [B, H, W, 3]) -> {key: float array [B]}     # NaN where no face was found
    measure.roles   = {key: motion role}        # e.g. {"mouth_open": "mouth_open", "yaw": "head_yaw"}
    measure.name    = "landmarks" | "probes" | ...
    measure.embed(images) -> [B, D]             # optional: an identity embedding
    measure.identity_scale                      # optional: the embedding distance of "another person"
    measure.detected(images) -> bool [B]        # optional: found by a detector (not only read in a box)
    measure.scales  = {key: amplitude}          # optional: the size of a full motion (gains are per it)

(:class:`engine.faces.FaceMeasure` reads dlib landmarks, :class:`engine.demo_world.probe_measure.
ProbeMeasure` the demo world's probes). Per role a ridge regression ``value ≈ a·(w − mean) + b``
gives the W direction ``v = a/‖a‖`` that changes it most linearly; directions are made orthogonal
in priority order (head pose first, then mouth and eyes) and their stdev is the spread of w along
them (x = 1 is one standard deviation) until the units are calibrated (below).

**Layers.** For each role, candidate layer ranges (all, coarse, middle, fine and their unions)
are tried on held-out identities: each is moved to ±2σ along the direction, only on those layers,
and measured again. A range's score is the target's change per σ (in units of the measure's scale
for it, ``measure.scales``: a full motion's amplitude) times ``1 − d/identity_scale`` (d: the
identity distance the move causes; at the distance of "another person" the gain counts for
nothing), minus the largest change it causes in another role (same units); of the ranges that keep
at least half of the strongest range's gain, the best-scoring one is kept.

**Units.** With ``calibrate`` (default) the roles a shipped audio model drives (``mouth_open``,
``jaw``) get the unit that moves them as far as the directions that model was trained on
(:mod:`engine.latent.calibrate`): the same x opens the mouth as wide on any generator. The other
roles keep σ units.

The report gives per role: R², gain per σ, identity distance at ±2σ, leakage into the other
roles, the layers chosen, every candidate's numbers and the unit (``unit``).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from tqdm import tqdm

from engine.latent.calibrate import calibrate as calibrate_units
from engine.latent.direction_set import Direction, DirectionSet
from engine.latent.sources import (
    PROBE_SIGMA,
    GeneratorSource,
    Readings,
    as_source,
    moved,
    read,
    render_measure,
    score_move,
)

__all__ = ["discover", "fit_directions", "layer_candidates", "GeneratorSource", "as_source", "settings",
           "NoFaceError", "PRIORITY", "MIN_DETECTED", "MIN_GAIN", "DISCOVERY_VERSION"]

#: the motion roles (engine.motion.base.ROLES) in orthogonalisation order: earlier ones keep their direction
PRIORITY = ("head_yaw", "head_pitch", "head_roll", "mouth_open", "blink", "jaw", "gaze_x", "gaze_y")
#: discovery stops unless at least this fraction of the samples had a face found by the detector
MIN_DETECTED = 0.05
#: a role is kept only if its direction moves it by at least this fraction of the measure's scale
#: for it (``measure.scales[key]``, e.g. a probe field's range; else the spread of the readings) per σ
MIN_GAIN = 0.02
#: ``refine``: the refined gradient is used only this close (cosine) to the first estimate
REFINE_MIN_COS = 0.5


class NoFaceError(ValueError):
    """Too few of the generator's samples hold a face: no directions are written."""


# -- regression ----------------------------------------------------------------------------------
def _role_keys(roles: Mapping[str, str], values: Mapping[str, np.ndarray]) -> dict[str, str]:
    """{role: measure key} in :data:`PRIORITY` order, validated."""
    by_role: dict[str, str] = {}
    for key, role in roles.items():
        if role not in PRIORITY:
            raise ValueError(f"unknown motion role {role!r} for measure key {key!r} (known: {', '.join(PRIORITY)})")
        if key not in values:
            raise ValueError(f"no measurements of {key!r}")
        if role in by_role:
            raise ValueError(f"two measure keys ({by_role[role]!r}, {key!r}) name the role {role!r}")
        by_role[role] = key
    return {r: by_role[r] for r in PRIORITY if r in by_role}


def fit_directions(x: np.ndarray, values: Mapping[str, np.ndarray], roles: Mapping[str, str], *,
                   w: Optional[np.ndarray] = None, ridge: float = 1e-3, checkpoint_hash: Optional[str] = None,
                   origin: str = "discovered", layers: Optional[Mapping[str, tuple[int, int]]] = None
                   ) -> tuple[DirectionSet, dict]:
    """A DirectionSet with one direction per measured key in ``roles`` (named by its role, in
    :data:`PRIORITY` order, Gram-Schmidt against the earlier ones) and a report
    ``{role: {"key", "r2", "stdev", "cos_before_orth", "samples"}}``.

    Ridge regression ``values[key] ≈ a·(x − mean) + b`` over rows ``x`` [N, w_dim] (rows with a
    NaN in any fitted key are left out); the direction is ``a/‖a‖``. ``x`` is either the samples'
    w themselves (across-identity regression, InterFaceGAN-style) or random offsets δ with
    ``values`` the measured change they cause (the local estimator of :func:`discover`). ``w``
    [M, w_dim]: the identities whose spread along a direction is its stdev (default ``x``).
    ``ridge`` is relative to the mean eigenvalue of the covariance of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    order = _role_keys(roles, values)
    ok = np.ones(len(x), dtype=bool)
    for key in order.values():
        ok &= np.isfinite(np.asarray(values[key], dtype=np.float64))
    xk = x[ok]
    if xk.ndim != 2 or xk.shape[0] < xk.shape[1] + 2:
        raise ValueError(f"need more measured samples than w_dim + 1 = {x.shape[1] + 1}, have {xk.shape[0]} "
                         "(raise --n)")
    xc = xk - xk.mean(axis=0)
    wref = xk if w is None else np.asarray(w, dtype=np.float64)
    wc = wref - wref.mean(axis=0)
    cov = xc.T @ xc / (len(xk) - 1)
    reg = cov + ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    ds, report, kept = DirectionSet(), {}, []
    for role, key in order.items():
        yc = np.asarray(values[key], dtype=np.float64)[ok]
        yc = yc - yc.mean()
        coef = np.linalg.solve(reg, xc.T @ yc / (len(xk) - 1))
        r2 = 1.0 - float(np.sum((yc - xc @ coef) ** 2) / max(np.sum(yc ** 2), 1e-12))
        raw = coef / max(np.linalg.norm(coef), 1e-12)
        v = raw.copy()
        for u in kept:
            v = v - (v @ u) * u
        norm = float(np.linalg.norm(v))
        if norm < 1e-6:
            raise ValueError(f"the direction of {role!r} lies in the span of the earlier ones")
        v = v / norm
        if (xc @ v) @ yc < 0:                            # + increases the measured value
            v = -v
        kept.append(v)
        stdev = float(np.std(wc @ v, ddof=1))
        ds.add(Direction(role, v, stdev=stdev, layers=(layers or {}).get(role), origin=origin,
                         source=f"ridge regression of the measured {key} (R² {r2:.3f}, {len(xk)} samples)"),
               checkpoint_hash=checkpoint_hash)
        report[role] = {"key": key, "r2": r2, "stdev": stdev, "cos_before_orth": float(abs(raw @ v)),
                        "samples": int(len(xk))}
    return ds, report


def layer_candidates(num_ws: int) -> list[tuple[int, int]]:
    """Layer ranges tried per role: all, coarse, middle, fine (thirds) and coarse+middle, middle+fine."""
    L = int(num_ws)
    t = max(1, L // 3)
    cands = [(0, L - 1), (0, t - 1), (t, min(2 * t, L) - 1), (min(2 * t, L - 1), L - 1), (0, min(2 * t, L) - 1),
             (t, L - 1)]
    out = []
    for c in cands:
        if 0 <= c[0] <= c[1] < L and c not in out:
            out.append(c)
    return out


def _refine(src, measure, ds: DirectionSet, role_keys: Mapping[str, str], w_fit: np.ndarray, delta: np.ndarray,
            base: Readings, ws0: np.ndarray, scales: Mapping[str, float], batch: int, times: dict, *,
            progress: bool = True) -> tuple[DirectionSet, dict]:
    """Each kept direction again, at the place its motion shows.

    A motion often starts at a hinge: a closed mouth does not close further, so at rest the
    gradient is small and mixed with whatever else moves the lips. Along the first estimate v the
    held-out faces are moved 1, 2, 4, 8 σ until the measured value has changed by half a full motion
    (``scales``), and the gradient is estimated again around ``w + t·σ·v`` with the same offsets δ
    (n more ± pairs). A refined direction further than ``REFINE_MIN_COS`` from the first estimate is
    not used (the moved point left the generator's faces). The directions are made orthogonal
    again in priority order.
    """
    num_ws = int(src.num_ws)
    raw, info = {}, {}
    bar = tqdm(total=2 * len(w_fit) * len(ds), desc="discover: refine", unit="img", disable=not progress)
    for d in ds:
        key = role_keys[d.name]
        start = float(np.nanmean(base.values[key]))
        shift, change = 8.0, float("nan")
        for t in (1.0, 2.0, 4.0, 8.0):
            change = float(np.nanmean(measure(src.render(moved(ws0, d, num_ws, t, None)))[key])) - start
            if change >= 0.5 * scales[key]:
                shift = t
                break
        at = w_fit + shift * d.stdev * d.vector.astype(np.float64)
        hi, _ = render_measure(src, measure, at + delta, batch, bar, times)
        lo, _ = render_measure(src, measure, at - delta, batch, bar, times)
        one, _ = fit_directions(delta, {key: (hi[key] - lo[key]) / 2}, {key: d.name})
        v = one[d.name].vector.astype(np.float64)
        cos = float(v @ d.vector)
        # far from the first estimate, the point was off the faces' manifold: keep the first
        keep = cos >= REFINE_MIN_COS
        raw[d.name] = v if keep else d.vector.astype(np.float64)
        info[d.name] = {"refined_at_sigma": shift, "refined_change": change, "cos_refined_to_first": cos,
                        "refined": bool(keep)}
    bar.close()
    out, kept = DirectionSet(), []
    wc = w_fit - w_fit.mean(axis=0)
    for d in ds:
        v = raw[d.name]
        for u in kept:
            v = v - (v @ u) * u
        v = v / max(float(np.linalg.norm(v)), 1e-12)
        kept.append(v)
        out.add(Direction(d.name, v, stdev=float(np.std(wc @ v, ddof=1)), origin=d.origin,
                          source=(d.source or "") + (f"; refined at {info[d.name]['refined_at_sigma']:g} σ"
                                                     if info[d.name]["refined"] else "")),
                checkpoint_hash=ds.checkpoint_hash)
    return out, info


#: bumped when discovery changes what it writes (2: units calibrated to the shipped drivers'),
#: so sets cached by an older discovery are made again
DISCOVERY_VERSION = 2


def settings(measure: str, **options) -> dict:
    """What a discovery was run with (in its report): a cached set is reused only for the same."""
    return {"measure": str(measure), "version": DISCOVERY_VERSION,
            **{k: (float(v) if isinstance(v, float) else v) for k, v in sorted(options.items())}}


def discover(generator, measure, *, n: int = 1000, holdout: int = 16, seed: int = 0, ridge: float = 1e-3,
             estimator: str = "local", step: float = 0.5, truncation_psi: float = 1.0, batch: int = 32,
             candidates: Optional[Sequence[tuple[int, int]]] = None, min_detected: float = MIN_DETECTED,
             min_gain: float = MIN_GAIN, refine: bool = False, calibrate: bool = True, progress: bool = True,
             log: Optional[Callable[[str], None]] = None) -> tuple[DirectionSet, dict]:
    """Sample, render, measure, fit one direction per role and choose its layers.

    ``estimator="local"`` (default): for each of ``n`` random identities w_i a random offset
    δ_i ~ N(0, (step·s̄)² I) (s̄ = the mean per-dimension spread of w) is rendered at w_i ± δ_i;
    the change it causes, (m(w+δ) − m(w−δ))/2, is regressed on δ. That is the measure's average
    gradient in W: the direction that *moves* the attribute, whatever else correlates with it
    across identities. ``"global"``: the across-identity regression of m(w_i) on w_i
    (InterFaceGAN-style; finds directions that *predict* the attribute, which on a generator whose
    random faces rarely show the motion are not the ones that make it).

    ``refine``: each direction estimated again where its motion shows (:func:`_refine`);
    ``calibrate``: units of the driven roles matched to the shipped drivers' (see the module doc).

    Returns ``(directions, report)``. Raises :class:`NoFaceError` (nothing written) when fewer than
    ``min_detected`` of the images hold a face the measure's detector finds, and ``ValueError``
    when too few samples were measured for the regression.
    """
    if estimator not in ("local", "global"):
        raise ValueError(f"estimator must be 'local' or 'global', got {estimator!r}")
    src = as_source(generator, truncation_psi=truncation_psi, batch=batch)
    num_ws, w_dim = int(src.num_ws), int(src.w_dim)
    roles = dict(measure.roles)
    mname = str(getattr(measure, "name", type(measure).__name__))
    identity_scale = float(getattr(measure, "identity_scale", 1.0))
    n, holdout = int(n), int(holdout)
    times = {"render": 0.0, "measure": 0.0, "images": 0}
    w_all = src.sample_w(n + holdout, seed)
    w_fit = w_all[:n]
    per = 2 if estimator == "local" else 1
    bar = tqdm(total=per * n + holdout, desc=f"discover ({mname}): render + measure", unit="img",
               disable=not progress)
    if estimator == "local":
        spread = float(np.sqrt(np.trace(np.cov(w_fit.T)) / w_dim)) if n > 1 else 1.0
        delta = np.random.default_rng(int(seed) + 1).standard_normal((n, w_dim)) * step * spread
        hi, det_hi = render_measure(src, measure, w_fit + delta, batch, bar, times, stop_early=True)
        det = det_hi
        if det_hi.any():
            lo, det_lo = render_measure(src, measure, w_fit - delta, batch, bar, times)
            det = np.concatenate([det_hi, det_lo])
    else:
        vals_fit, det = render_measure(src, measure, w_fit, batch, bar, times, stop_early=True)
    seen = len(det)
    if det.sum() < max(1.0, min_detected * seen):
        bar.close()
        raise NoFaceError(f"{seen - int(det.sum())} of {seen} samples had no face the {mname} measure could find "
                          f"(need at least {100 * min_detected:.0f}%): this generator does not make faces; "
                          "no directions written")
    vals_hold, _ = render_measure(src, measure, w_all[n:], batch, bar, times)
    bar.close()
    ckpt = getattr(src, "checkpoint_hash", None)
    if estimator == "local":
        x_fit, y_fit, w_ref = delta, {k: (hi[k] - lo[k]) / 2 for k in hi}, w_fit
        spread_vals = {k: np.concatenate([hi[k], lo[k]]) for k in hi}
    else:
        x_fit, y_fit, w_ref = w_fit, vals_fit, None
        spread_vals = vals_fit
    all_keys = _role_keys(roles, spread_vals)
    measured = int(np.all([np.isfinite(y_fit[k]) for k in all_keys.values()], axis=0).sum())
    if measured < w_dim + 2:
        raise ValueError(f"need more measured samples than w_dim + 1 = {w_dim + 1}, have {measured} (raise --n)")
    scales = dict(getattr(measure, "scales", {}) or {})
    keys_sd = {k: float(scales[k]) if k in scales else float(np.nanstd(spread_vals[k])) for k in all_keys.values()}
    hold = np.arange(holdout)[np.all([np.isfinite(vals_hold[k]) for k in all_keys.values()], axis=0)]
    if len(hold) == 0:
        raise NoFaceError(f"none of the {holdout} held-out samples had a measured face: raise --holdout")
    ws0 = np.broadcast_to(w_all[n + hold][:, None, :], (len(hold), num_ws, w_dim)).copy()
    t0 = time.perf_counter()
    base = read(measure, src.render(ws0))
    # screen: each role's own direction (not orthogonalised), all layers, on the held-out faces;
    # a role the generator does not render (gain below min_gain of a full motion per σ) is left out
    screened, kept_roles = {}, {}
    for role, key in all_keys.items():
        try:
            d = fit_directions(x_fit, y_fit, {key: role}, w=w_ref, ridge=ridge)[0][role]
        except ValueError:                                # the value never changes: no direction
            screened[role] = {"gain_per_sigma_scaled": 0.0, "identity_distance_2sigma": float("nan")}
            continue
        lo_r = read(measure, src.render(moved(ws0, d, num_ws, -PROBE_SIGMA, None)))
        hi_r = read(measure, src.render(moved(ws0, d, num_ws, PROBE_SIGMA, None)))
        screened[role] = score_move(base, lo_r, hi_r, key, keys_sd, {role: key}, role, identity_scale)
        if np.isfinite(screened[role]["gain_per_sigma_scaled"]) and screened[role]["gain_per_sigma_scaled"] >= min_gain:
            kept_roles[key] = role
    dropped = [r for r in all_keys if r not in kept_roles.values()]
    if not kept_roles:
        raise NoFaceError(f"no motion role moved by at least {min_gain} of a full motion per σ along its direction "
                          f"({', '.join(r + ' ' + format(v['gain_per_sigma_scaled'], '+.3f') for r, v in screened.items())}): "
                          "no directions written")
    ds, fit_report = fit_directions(x_fit, y_fit, kept_roles, w=w_ref, ridge=ridge, checkpoint_hash=ckpt,
                                    origin=f"discovered:{mname}")
    role_keys = {r: k for k, r in kept_roles.items()}
    refined = {}
    if refine and estimator == "local":
        ds, refined = _refine(src, measure, ds, role_keys, w_fit, delta, base, ws0, keys_sd, batch, times,
                              progress=progress)
        for role, info in refined.items():
            fit_report[role].update(info)
    cands = list(candidates) if candidates is not None else layer_candidates(num_ws)
    report: dict[str, Any] = {"measure": mname, "estimator": estimator, "step": step if estimator == "local" else None,
                              "samples": int(n), "images": seen, "detected": int(det.sum()),
                              "holdout": int(len(hold)), "num_ws": num_ws, "w_dim": w_dim,
                              "checkpoint_hash": ckpt, "min_gain": min_gain, "refine": bool(refined),
                              "screen": {r: {"gain_per_sigma_scaled": v["gain_per_sigma_scaled"],
                                             "identity_distance_2sigma": v["identity_distance_2sigma"]}
                                         for r, v in screened.items()},
                              "left_out": dropped, "roles": {}}
    bar = tqdm(total=len(ds) * len(cands), desc="discover: layer ranges", unit="range", disable=not progress)
    for d in list(ds):
        role = d.name
        tried = []
        for layers in cands:
            lo_r = read(measure, src.render(moved(ws0, d, num_ws, -PROBE_SIGMA, layers)))
            hi_r = read(measure, src.render(moved(ws0, d, num_ws, PROBE_SIGMA, layers)))
            tried.append(dict(layers=list(layers), **score_move(base, lo_r, hi_r, fit_report[role]["key"], keys_sd,
                                                                  role_keys, role, identity_scale)))
            bar.update(1)
        top = max(c["gain_per_sigma_scaled"] for c in tried if np.isfinite(c["gain_per_sigma_scaled"]))
        strong = [c for c in tried if np.isfinite(c["gain_per_sigma_scaled"]) and c["gain_per_sigma_scaled"] >= 0.5 * top]
        best = max(strong, key=lambda c: c["score"])          # at least half the strongest range's gain
        chosen = None if tuple(best["layers"]) == (0, num_ws - 1) else tuple(best["layers"])
        ds.add(Direction(role, d.vector, d.stdev, layers=chosen, origin=d.origin, source=d.source), replace=True)
        report["roles"][role] = {**fit_report[role], **{k: best[k] for k in
                                                        ("gain_per_sigma", "gain_per_sigma_scaled",
                                                         "identity_distance_2sigma", "leakage", "score")},
                                 "layers": best["layers"], "candidates": tried}
    bar.close()
    report["calibrated"] = bool(calibrate)
    report["settings"] = settings(mname, n=n, holdout=holdout, seed=seed, estimator=estimator, step=step,
                                  refine=refine, calibrate=calibrate, truncation_psi=getattr(src, "truncation_psi", None))
    if calibrate:                                        # x = 1 means the motion the shipped drivers mean

        ds, units = calibrate_units(src, measure, ds, role_keys, ws0, base, keys_sd)
        for role, info in units.items():
            report["roles"][role]["unit"] = info
    imgs = max(times["images"], 1)
    report["timing_s"] = {"render": times["render"], "measure": times["measure"],
                          "layers": time.perf_counter() - t0,
                          "render_per_1000": 1000 * times["render"] / imgs,
                          "measure_per_1000": 1000 * times["measure"] / imgs}
    if log is not None:
        if dropped:
            log(f"not rendered by this generator (under {min_gain} of a full motion per σ), left out: {', '.join(dropped)}")
        log(f"discovered {len(ds)} directions with the {mname} measure ({int(det.sum())} of {seen} images "
            f"with a detected face): " + ", ".join(f"{r} {v['gain_per_sigma_scaled']:+.2f}/σ layers "
                                                   f"{v['layers'][0]}-{v['layers'][1]}"
                                                   for r, v in report["roles"].items()))
    return ds, report
