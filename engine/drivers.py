"""Driver specs: the strings a session, a CLI or a client names a motion driver with.

``"default"`` (the engine's default for the session's fps), ``"idle"``, ``"idle:no-priors"`` (the
idle driver without its speech priors: only the mouth answers the audio, head, gaze and blinks
run on their own seeded schedule), ``"lstm:PATH"``,
``"lstm+idle:PATH"`` (the model's directions over the idle driver's blinks and sway),
``"trajectory:PATH.npy"``, or a :class:`~engine.motion.base.MotionDriver` given as is. Every
driver is checked against the engine's direction set and the session's frame rate.
"""
from __future__ import annotations

from typing import Optional

from engine.motion.base import MotionDriver
from engine.motion.idle import IdleDriver
from engine.motion.layered import LayeredDriver
from engine.motion.lstm_driver import AudioLSTMDriver
from engine.motion.lstm_file import load_motion_model
from engine.motion.trajectory import TrajectoryDriver

__all__ = ["make_driver", "feature_needs", "DRIVER_SPECS"]

DRIVER_SPECS = ("default", "idle", "idle:no-priors", "lstm:PATH.safetensors", "lstm+idle:PATH.safetensors",
                "trajectory:PATH.npy")


def _lstm(arg: str, engine, *, fps: float, seed: int, layered: bool) -> MotionDriver:
    ds = engine.directions
    model = load_motion_model(arg, device=engine.device)       # MotionModelError is a ValueError
    names = model.config.names
    if names is not None:        # the directions it was trained on, by name
        missing = [n for n in names if n not in ds]
        if missing:
            raise ValueError(f"{arg}: the model drives {', '.join(missing)}, which the direction set "
                             f"does not have ({', '.join(ds.names)})")
    elif model.config.k > len(ds):
        raise ValueError(f"{arg}: the model drives {model.config.k} directions, the direction set has {len(ds)}")
    else:
        names = ds.names[:model.config.k]
    drv = AudioLSTMDriver(model, names, seed=seed, device=engine.device, fps=fps)
    return LayeredDriver(drv, IdleDriver(ds, fps=fps, seed=seed)) if layered else drv


def make_driver(spec, engine, *, fps: float, seed: int = 0) -> MotionDriver:
    """The driver named by ``spec`` for a session of ``engine`` at ``fps``; ValueError with the
    reason (unknown spec, names the direction set lacks, another frame rate)."""
    ds = engine.directions
    if isinstance(spec, MotionDriver):
        drv = spec
    elif isinstance(spec, str):
        if spec == "default":
            spec = engine.default_driver_for(fps)
        kind, _, arg = spec.partition(":")
        if kind == "idle" and arg in ("", "no-priors"):
            drv = IdleDriver(ds, fps=fps, seed=seed, priors=not arg)
        elif kind in ("lstm", "lstm+idle") and arg:
            drv = _lstm(arg, engine, fps=fps, seed=seed, layered=kind == "lstm+idle")
        elif kind == "trajectory" and arg:
            drv = TrajectoryDriver.load(arg, names=ds, directions=ds, fps=fps, num_ws=engine.num_ws)
        else:
            raise ValueError(f"unknown driver {spec!r} ({', '.join(DRIVER_SPECS)} or a MotionDriver)")
    else:
        raise ValueError(f"driver must be a string or a MotionDriver, got {type(spec).__name__}")
    missing = [n for n in drv.names if n not in ds]
    if missing:
        raise ValueError(f"the driver moves directions {missing} that the engine's direction set lacks "
                         f"(have: {', '.join(ds.names)})")
    drv_fps = float(getattr(drv, "fps", fps))
    if abs(drv_fps - fps) > 1e-6 * fps:
        raise ValueError(f"the driver runs at {drv_fps:g} fps, this session at {fps:g} fps")
    return drv


def feature_needs(drv) -> tuple[Optional[float], Optional[float]]:
    """(lookahead_ms, window_ms) the driver was trained with (None where it has no requirement)."""
    look = getattr(drv, "lookahead_ms", None)
    cfg = getattr(drv, "config", None)
    frames = getattr(cfg, "window_frames", None)
    window = None if frames is None else float(frames) * 10.0
    return (None if look is None else float(look)), window
