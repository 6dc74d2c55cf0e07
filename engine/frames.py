"""What a session hands out: :class:`Frame`, and the one place float images become uint8.

Synthesis gives float images in [-1, 1] ([B, 3, H, W], any device); :func:`images_to_uint8`
turns them into [B, H, W, 3] uint8 RGB. Every path to pixels (sessions, sinks, CLIs, the
streaming edge) goes through it, so the quantisation is the same everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch

__all__ = ["Frame", "STAGES", "STATS_WINDOW", "images_to_uint8", "frame_rgb", "stage_summary"]

#: Keys of ``Frame.timings`` (milliseconds).
STAGES = ("features", "motion", "latent", "synthesis", "convert", "total")
#: frames the per-stage statistics of a session cover
STATS_WINDOW = 250


def images_to_uint8(img: torch.Tensor) -> np.ndarray:
    """NCHW float in [-1, 1] → NHWC uint8 (the one place images are quantised); a single CHW
    image gives HWC."""
    single = img.ndim == 3
    x = img[None] if single else img
    x = (x.detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    out = x.permute(0, 2, 3, 1).cpu().numpy()
    return out[0] if single else out


@dataclass
class Frame:
    """One video frame and what made it. Times are 16 kHz sample counts unless named ``_s``/``_ms``."""
    index: int                      # video frame k (0, 1, 2, ...)
    pts: int                        # round(k · 16000 / fps): start of frame k's audio, 16 kHz samples
    time_s: float                   # pts / 16000
    image: Union[np.ndarray, torch.Tensor]  # [H, W, 3] uint8 RGB, or [3, H, W] float tensor (output="tensor")
    x: np.ndarray                   # control vector x_t [k] float32 (stdev units) of frame k
    voiced: float                   # voiced fraction of frame k's audio (webrtcvad), 0..1
    rms: float                      # RMS of frame k's audio (full scale 1.0)
    audio: Optional[np.ndarray] = None      # int16 mono at audio_rate (audio_out=True), see module doc
    audio_rate: Optional[int] = None
    dropped: int = 0                # frames stepped (motion) but not synthesized since the previous Frame
    timings: dict = field(default_factory=dict)   # ms per stage, keys STAGES
    latency_ms: float = 0.0         # resampler lag + feature lookahead (AvatarSession.latency_ms)


def frame_rgb(frame: Frame) -> np.ndarray:
    """``frame.image`` as [H, W, 3] uint8 RGB (a session with ``output="tensor"`` gives float
    tensors: quantised here, by :func:`images_to_uint8`)."""
    img = frame.image
    return img if isinstance(img, np.ndarray) else images_to_uint8(img)


def stage_summary(rows) -> dict:
    """``{"window": n, "timings": {stage: {"p50": ms, "p95": ms}}}`` over ``Frame.timings`` rows
    (None where there are none)."""
    out = {"window": len(rows), "timings": {}}
    for s in STAGES:
        v = np.array([r[s] for r in rows], dtype=np.float64)
        out["timings"][s] = ({"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))}
                             if v.size else {"p50": None, "p95": None})
    return out
