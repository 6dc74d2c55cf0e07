"""TrajectoryDriver: play a recorded motion onto any identity (expression transfer).

Two kinds of recording, both one row per recorded frame at ``recording_fps``:

* ``kind="x"``: control vectors x_t [T, k] in stdev units of the directions ``names`` (a
  DirectionSet or its names, in column order). ``step()`` returns them (resampled, clamped to
  ±``clamp``), so ``DirectionSet.to_path`` + ``LatentPath`` render them on any anchor.
* ``kind="w"``: latents of identity A, w_t [T, w_dim] (one w for every layer) or
  ws_t [T, num_ws, w_dim]. The motion is the offset from the recording's reference frame
  (``reference="first"`` (default), ``"mean"`` or a frame index),
  Δ_t = w_A,t − w_A,ref, and the transfer onto identity B is ws_B,t = ws_B + Δ_t
  (MoCoGAN-HD, Fig. 13). Two ways out, call **one** of them per frame (each advances a frame):

  - :meth:`TrajectoryDriver.step_delta_ws` → Δ_t [num_ws, w_dim] (and :meth:`step_ws` →
    ws_B + Δ_t for the anchor given to :meth:`reset`): the exact transfer, all of W, unclamped.
  - :meth:`TrajectoryDriver.step` → x_t [k], the least-squares projection of Δ_t onto the
    ``directions`` (with their layer masks and stdevs: Δ ≈ Σ_i x_i·stdev_i·mask_i⊗v_i), so the
    recording drives the same LatentPath as every other driver. This is **lossy**: the part of Δ
    outside the span of the chosen directions (typically most of it, for a handful of
    directions) is dropped, and x is clamped. :attr:`projection_loss` reports the dropped
    fraction of ‖Δ‖² over the whole recording.

Playback runs on the driver's clock: video frame n shows recording time n / fps, i.e. recording
position p = n · recording_fps / fps, sampled by ``resample="linear"`` (between the two
neighbouring frames) or ``"nearest"``. At the end (``end="hold"``) the last frame is held, or
(``end="loop"``) playback wraps to frame 0 (linear resampling then blends the last frame into
the first). ``flush()`` fades the motion to zero over ``flush_frames`` frames and stops playback
until ``reset()``. Each step is O(1): an index computation and a blend of two stored frames.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

from .base import MotionDriver, flush_frames_for, resolve_names

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.audio.features import FrameFeatures
    from engine.latent.direction_set import DirectionSet

__all__ = ["TrajectoryDriver"]

_KINDS = ("x", "w")


def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a)


class TrajectoryDriver(MotionDriver):
    """Plays a recorded x_t or w_t sequence; see the module docstring.

    Args:
        recording: x [T, k], w [T, w_dim] or ws [T, num_ws, w_dim] (array or tensor).
        kind: ``"x"``, ``"w"`` or ``"auto"`` (3-D → w; 2-D → x when its width is ``len(names)``,
            w when it is the directions' (or ``w_dim``'s) width).
        names: column names of an x recording (DirectionSet or list); for a w recording the
            ``directions`` give the names.
        directions: DirectionSet to project a w recording onto (needed for ``step()`` on w).
        fps: the driver's video frame rate; recording_fps: the recording's (default ``fps``).
        end: ``"hold"`` (keep the last frame) or ``"loop"``.
        resample: ``"linear"`` or ``"nearest"``.
        reference: w recordings: ``"first"``, ``"mean"`` or a frame index.
        num_ws: layers of the target generator (required for a 2-D w recording; checked against a
            3-D one). w_dim: expected w width (checked; defaults to the directions').
        clamp: |x| bound for ``step()`` (stdev units). flush_frames: fade length of ``flush()``
            (default: 40 ms, :func:`~engine.motion.base.flush_frames_for`).
    """

    def __init__(self, recording, *, kind: str = "auto", names: Union["DirectionSet", Sequence[str], None] = None,
                 directions: Optional["DirectionSet"] = None, fps: float = 25.0, recording_fps: Optional[float] = None,
                 end: str = "hold", resample: str = "linear", reference: Union[str, int] = "first",
                 num_ws: Optional[int] = None, w_dim: Optional[int] = None, clamp: float = 3.0,
                 flush_frames: Optional[int] = None, source: Optional[str] = None):
        where = f"{source}: " if source else ""
        self.fps = float(fps)
        self.recording_fps = self.fps if recording_fps is None else float(recording_fps)
        for label, v in (("fps", self.fps), ("recording_fps", self.recording_fps)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{label} must be a positive number, got {v!r}")
        if end not in ("hold", "loop"):
            raise ValueError(f"end must be 'hold' or 'loop', got {end!r}")
        if resample not in ("linear", "nearest"):
            raise ValueError(f"resample must be 'linear' or 'nearest', got {resample!r}")
        self.end, self.resample = end, resample
        self.clamp = float(clamp)
        if not self.clamp > 0:
            raise ValueError(f"clamp must be positive, got {clamp!r}")
        self.flush_frames = flush_frames_for(self.fps, flush_frames)

        rec = _as_numpy(recording)
        if not (np.issubdtype(rec.dtype, np.floating) or np.issubdtype(rec.dtype, np.integer)) \
                or rec.dtype == np.bool_:
            raise ValueError(f"{where}recording must hold numbers, got dtype {rec.dtype}")
        if rec.ndim not in (2, 3):
            raise ValueError(f"{where}recording must be [T, k], [T, w_dim] or [T, num_ws, w_dim], "
                             f"got shape {tuple(rec.shape)}")
        if rec.shape[0] == 0 or 0 in rec.shape:
            raise ValueError(f"{where}recording is empty (shape {tuple(rec.shape)})")
        bad = ~np.isfinite(rec.reshape(rec.shape[0], -1)).all(axis=1)
        if bad.any():
            raise ValueError(f"{where}recording contains NaN or infinity (first in frame {int(np.argmax(bad))})")
        x_names = resolve_names(names) if names is not None else None
        if w_dim is None and directions is not None:
            w_dim = directions.w_dim
        if kind == "auto":
            if rec.ndim == 3:
                kind = "w"
            elif x_names is not None and rec.shape[1] == len(x_names):
                kind = "x"
            elif w_dim is not None and rec.shape[1] == w_dim:
                kind = "w"
            else:
                raise ValueError(f"{where}cannot tell whether a [{rec.shape[0]}, {rec.shape[1]}] recording is x_t "
                                 f"({len(x_names) if x_names is not None else '?'} names given) or w_t "
                                 f"(w_dim {w_dim if w_dim is not None else '?'}): pass kind='x' or 'w'")
        if kind not in _KINDS:
            raise ValueError(f"kind must be 'x', 'w' or 'auto', got {kind!r}")
        self.kind = kind
        self.T = int(rec.shape[0])
        self.num_ws: Optional[int] = None
        self.w_dim: Optional[int] = None
        self.projection_loss: Optional[float] = None
        self._delta: Optional[np.ndarray] = None

        if kind == "x":
            if x_names is None:
                raise ValueError(f"{where}an x_t recording needs the direction names of its columns")
            if rec.ndim != 2 or rec.shape[1] != len(x_names):
                raise ValueError(f"{where}x_t recording must be [T, {len(x_names)}] for names {x_names}, "
                                 f"got shape {tuple(rec.shape)}")
            self.names = x_names
            self._x = rec.astype(np.float32)
        else:
            self._init_w(rec, directions, x_names, reference, num_ws, w_dim, where)
        self._anchor: Optional[np.ndarray] = None
        self.reset()

    def _init_w(self, rec, directions, x_names, reference, num_ws, w_dim, where) -> None:
        rec = rec.astype(np.float64)
        rec_w_dim = int(rec.shape[-1])
        if w_dim is not None and rec_w_dim != int(w_dim):
            raise ValueError(f"{where}w_t recording has w_dim {rec_w_dim}, expected {int(w_dim)}")
        if rec.ndim == 3:
            if num_ws is not None and rec.shape[1] != int(num_ws):
                raise ValueError(f"{where}ws_t recording has {rec.shape[1]} layers, the generator has {int(num_ws)}")
            num_ws = int(rec.shape[1])
        elif num_ws is None:
            raise ValueError(f"{where}a [T, w_dim] w_t recording needs num_ws (the generator's number of layers)")
        self.num_ws, self.w_dim = int(num_ws), rec_w_dim
        if isinstance(reference, str):
            if reference == "first":
                ref = rec[0]
            elif reference == "mean":
                ref = rec.mean(axis=0)
            else:
                raise ValueError(f"reference must be 'first', 'mean' or a frame index, got {reference!r}")
        else:
            i = int(reference)
            if not -self.T <= i < self.T:
                raise ValueError(f"{where}reference frame {i} is outside the recording's {self.T} frames")
            ref = rec[i]
        delta = rec - ref[None]
        self._delta = delta.astype(np.float32)  # [T, w_dim] or [T, num_ws, w_dim]
        if directions is None:
            if x_names:
                raise ValueError(f"{where}projecting a w_t recording onto names needs the DirectionSet (directions=)")
            self.names = []
            self._x = np.zeros((self.T, 0), np.float32)
            return
        self.names = resolve_names(directions)
        if x_names is not None and x_names != self.names:
            self.names = x_names
        x, self.projection_loss = directions.project(delta, self.num_ws, self.names)
        self._x = x

    # -- files ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Union[str, os.PathLike], **kwargs) -> "TrajectoryDriver":
        """Read a recording from an ``.npy`` file (no pickles) and build a driver (``kwargs`` as for
        the constructor). FileNotFoundError or ValueError naming the file."""
        path = Path(path)
        try:
            rec = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
        if isinstance(rec, np.lib.npyio.NpzFile):
            rec.close()
            raise ValueError(f"{path}: an .npz archive, not a single .npy array")
        return cls(rec, source=str(path), **kwargs)

    # -- playback ------------------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds."""
        return self.T / self.recording_fps

    @property
    def finished(self) -> bool:
        """True once a held recording has reached its last frame, or after a flush."""
        if self._stopped:
            return True
        return self.end == "hold" and self._n * self.recording_fps / self.fps >= self.T - 1

    def reset(self, anchor=None) -> None:
        """Back to frame 0; ``anchor`` (ws [num_ws, w_dim] or w [w_dim]) is the identity for
        :meth:`step_ws`."""
        self._n = 0
        self._fade_left = -1       # -1: no flush in progress
        self._stopped = False
        if anchor is not None:
            a = _as_numpy(anchor).astype(np.float32)
            if a.ndim == 3 and a.shape[0] == 1:
                a = a[0]
            if self.kind != "w":
                self._anchor = a
            else:
                if a.ndim == 1:
                    a = np.broadcast_to(a, (self.num_ws, a.shape[0]))
                if a.shape != (self.num_ws, self.w_dim):
                    raise ValueError(f"anchor must be [{self.num_ws}, {self.w_dim}] (or [{self.w_dim}]), "
                                     f"got {list(a.shape)}")
                if not np.isfinite(a).all():
                    raise ValueError("anchor contains NaN or infinity")
                self._anchor = np.ascontiguousarray(a)

    def flush(self) -> None:
        """Fade to zero motion over ``flush_frames`` frames, then stop until ``reset()``."""
        if not self._stopped and self._fade_left < 0:
            self._fade_left = self.flush_frames

    def _advance(self) -> tuple[int, int, float, float]:
        """(i0, i1, blend, gain) for this frame, then move the clock one frame on."""
        if self._stopped:
            return 0, 0, 0.0, 0.0
        gain = 1.0
        if self._fade_left >= 0:
            self._fade_left -= 1
            gain = max(self._fade_left, 0) / self.flush_frames
            if self._fade_left <= 0:
                self._stopped = True
        p = self._n * self.recording_fps / self.fps
        self._n += 1
        T = self.T
        if self.end == "loop":
            p = math.fmod(p, T)
        else:
            p = min(p, T - 1.0)
        if self.resample == "nearest":
            i = int(math.floor(p + 0.5))
            i = i % T if self.end == "loop" else min(i, T - 1)
            return i, i, 0.0, gain
        i0 = int(math.floor(p))
        frac = p - i0
        i1 = (i0 + 1) % T if self.end == "loop" else min(i0 + 1, T - 1)
        return i0, i1, frac, gain

    def step(self, features: Optional["FrameFeatures"] = None) -> np.ndarray:
        """x_t [k] float32 (stdev units, clamped); for a w recording the projection onto the
        directions (lossy, see :attr:`projection_loss`). ``features`` are not used."""
        i0, i1, frac, gain = self._advance()
        x = self._x[i0] if frac == 0.0 else (1.0 - frac) * self._x[i0] + frac * self._x[i1]
        x = np.clip(gain * x, -self.clamp, self.clamp)
        return x.astype(np.float32)

    def step_delta_ws(self, features: Optional["FrameFeatures"] = None) -> np.ndarray:
        """Δ_t = w_A,t − w_A,ref as [num_ws, w_dim] float32 (w recordings only; exact, unclamped)."""
        if self.kind != "w":
            raise RuntimeError("step_delta_ws needs a w_t recording; this driver plays x_t (use step())")
        i0, i1, frac, gain = self._advance()
        d = self._delta[i0] if frac == 0.0 else (1.0 - frac) * self._delta[i0] + frac * self._delta[i1]
        d = (gain * d).astype(np.float32)
        if d.ndim == 1:
            d = np.broadcast_to(d, (self.num_ws, self.w_dim)).copy()
        return d

    def step_ws(self, features: Optional["FrameFeatures"] = None) -> np.ndarray:
        """ws_B,t = ws_B + Δ_t [num_ws, w_dim] float32 for the anchor given to ``reset(anchor)``."""
        if self.kind != "w":
            raise RuntimeError("step_ws needs a w_t recording; this driver plays x_t (use step())")
        if self._anchor is None:
            raise RuntimeError("step_ws needs the target identity: call reset(anchor=ws_B) first")
        return self._anchor + self.step_delta_ws(features)
