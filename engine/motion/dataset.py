"""The motion trainer's data: (audio, motion) pairs read into clips of log-mel windows and x_t.

Data: a directory of pairs ``NAME.wav`` + ``NAME.npy`` (+ optional ``NAME.json``):

* ``NAME.wav``: int16 PCM, any rate 8-48 kHz, 1-8 channels (read with the stdlib ``wave``
  module, converted to 16 kHz mono by :class:`engine.audio.input.AudioInput`).
* ``NAME.npy``: the per-frame targets, one row per video frame at the clip's fps, either
  control vectors x_t [T, k] (stdev units), or latents, the form an inversion pipeline produces
  from video: w_t [T, w_dim] (one w for all layers) or ws_t [T, num_ws, w_dim]. Latents need a
  :class:`~engine.latent.direction_set.DirectionSet` (``directions=``): they are turned into x_t by
  the least-squares projection of their offsets from the anchor onto the chosen directions
  (``DirectionSet.project``, with each direction's layer mask and stdev — the same map the
  ``TrajectoryDriver`` uses), so the loss is on x_t and the model drives the same ``LatentPath``.
  The part of the offsets outside the directions' span is lost; :attr:`Clip.projection_loss`
  reports it per clip.
* ``NAME.json`` (optional): ``{"fps": 25.0, "anchor": [w_dim floats]}``; fps defaults to the
  dataset's fps. The anchor (the identity's w, input of the LSTM's state encoder) defaults to
  the zero vector for x_t targets and to the first frame's w for latent targets (whose offsets
  are then measured from it).

Models with their own clock (``step_hz``, see :mod:`engine.motion.step_clock`): with
``MotionDataset(..., step_hz=r)`` the windows are those of a FeatureStream at ``fps = r`` and the
targets are the clip's per-frame x linearly interpolated at the steps' centres (each frame's value
sits at its frame's centre); :attr:`MotionDataset.fps` is then r and ``data_fps`` the clips'.

Features: :func:`frame_windows` runs the clip through :class:`engine.audio.features.FeatureStream`
(push everything, then flush), so training sees exactly the log-mel windows the streaming driver
sees, lookahead included. The audio may be up to one frame longer or shorter than x_t; both are
cut to the shorter. Anything else (no pairs, a longer mismatch, NaN/Inf, wrong k, unreadable
files) is a :class:`DatasetError` with a one-line message.
"""
from __future__ import annotations

import json
import math
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from engine.audio.features import HOP_LENGTH, N_MELS, FeatureStream, round_half_up
from engine.audio.input import MAX_RATE, MIN_RATE, SAMPLE_RATE, AudioInput
from engine.latent.direction_set import DirectionSet

__all__ = ["frame_windows", "read_wav", "Clip", "MotionDataset", "DatasetError", "LENGTH_TOLERANCE",
           "frames_in", "at_step_centres"]

LENGTH_TOLERANCE = 1          # frames of audio / x_t length mismatch that are cut silently


class DatasetError(ValueError):
    """A problem with a training data directory (one-line message naming the file)."""


# -- features ------------------------------------------------------------------------------------
def frame_windows(samples_16k: np.ndarray, fps: float = 25.0, window_frames: int = 32,
                  lookahead_ms: float = 40.0) -> np.ndarray:
    """Log-mel windows [T, window_frames, 80] float32, one per video frame, exactly as a
    :class:`FeatureStream` (same fps, lookahead, window) emits them for this signal pushed in
    one piece and flushed (T = frames whose interval starts before the end of the signal)."""
    if not (isinstance(window_frames, (int, np.integer)) and window_frames >= 1):
        raise ValueError(f"window_frames must be a positive integer, got {window_frames!r}")
    window_ms = int(window_frames) * 1000.0 * HOP_LENGTH / SAMPLE_RATE
    stream = FeatureStream(fps=fps, lookahead_ms=lookahead_ms, window_ms=window_ms)
    if stream.window_frames != window_frames:  # pragma: no cover - rounding guard
        raise ValueError(f"window_frames {window_frames} not representable")
    feats = stream.push(np.asarray(samples_16k)) + stream.flush()
    if not feats:
        return np.zeros((0, int(window_frames), N_MELS), dtype=np.float32)
    return np.stack([f.mel for f in feats]).astype(np.float32, copy=False)


def frames_in(n_samples: int, fps: float) -> int:
    """How many frames at ``fps`` start before the end of ``n_samples`` 16 kHz samples
    (frame k starts at ``round_half_up(k·16000/fps)``)."""
    k = max(0, int(n_samples * fps / SAMPLE_RATE) - 1)
    while round_half_up(k * SAMPLE_RATE / fps) < n_samples:
        k += 1
    return k


def at_step_centres(x: np.ndarray, fps: float, step_hz: float, steps: int) -> np.ndarray:
    """Per-frame targets x [T, k] at ``fps`` (each at its frame's centre) → [steps, k] at the
    centres of steps at ``step_hz``, linearly interpolated (held beyond the first/last centre)."""
    def centres(n: int, rate: float) -> np.ndarray:
        b = np.array([round_half_up(i * SAMPLE_RATE / rate) for i in range(n + 1)], np.float64)
        return 0.5 * (b[:-1] + b[1:])
    src, dst = centres(x.shape[0], fps), centres(int(steps), step_hz)
    return np.stack([np.interp(dst, src, x[:, j]) for j in range(x.shape[1])], axis=1).astype(np.float32)


def read_wav(path: os.PathLike | str) -> np.ndarray:
    """16 kHz mono float32 samples of an int16 PCM .wav (any rate 8-48 kHz, 1-8 channels)."""
    path = Path(path)
    try:
        with wave.open(os.fspath(path), "rb") as f:
            channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise DatasetError(f"{path.name}: not a readable PCM .wav file ({exc})") from None
    if width != 2:
        raise DatasetError(f"{path.name}: {8 * width}-bit samples; only 16-bit PCM .wav is supported")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DatasetError(f"{path.name}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if not 1 <= channels <= 8:
        raise DatasetError(f"{path.name}: {channels} channels (supported: 1..8)")
    pcm = np.frombuffer(raw, dtype="<i2")
    pcm = pcm[: (pcm.size // channels) * channels]
    conv = AudioInput(rate, channels, "int16")
    out = [conv.push(pcm.copy()), conv.flush()]
    return np.concatenate(out).astype(np.float32, copy=False)


# -- dataset -------------------------------------------------------------------------------------
@dataclass
class Clip:
    name: str
    windows: np.ndarray      # [T, window_frames, 80] float32
    x: np.ndarray            # [T, k] float32
    anchor: np.ndarray       # [w_dim] float32
    projection_loss: Optional[float] = None   # latent targets: dropped fraction of Σ‖Δw‖²

    @property
    def frames(self) -> int:
        return int(self.x.shape[0])


class MotionDataset:
    """Pairs NAME.wav + NAME.npy (+ NAME.json) of a directory, features precomputed in memory.

    Args:
        root: the directory.
        k: expected number of x components (default: taken from the first clip; all must agree).
        w_dim: anchor width (default: from the first anchor in a JSON file, else ``default_w_dim``).
        fps: the dataset fps when a clip has no JSON ``fps``; every clip must have the same fps.
        window_frames, lookahead_ms: the feature settings (must match the model's).
        step_hz: train a model with its own clock at this step rate (None: one step per frame).
        directions: DirectionSet (or the path of its JSON) that latent targets are projected onto;
            its names (or ``names``) are the x components, in order.
        num_ws: the generator's layer count (needed for [T, w_dim] latent targets; checked
            against [T, num_ws, w_dim] ones).
        targets: ``"x"``, ``"w"`` or ``"auto"`` (3-D → w; 2-D → w when the width is the
            directions' w_dim and not k, else x).
    """

    def __init__(self, root: os.PathLike | str, *, k: Optional[int] = None, w_dim: Optional[int] = None,
                 fps: float = 25.0, window_frames: int = 32, lookahead_ms: float = 40.0,
                 default_w_dim: int = 512, directions: Any = None, names: Optional[Sequence[str]] = None,
                 num_ws: Optional[int] = None, targets: str = "auto", step_hz: Optional[float] = None):
        if targets not in ("auto", "x", "w"):
            raise ValueError(f"targets must be 'auto', 'x' or 'w', got {targets!r}")
        self.targets = targets
        self.directions = self._directions(directions)
        self.names: Optional[list[str]] = None
        if self.directions is not None:
            self.names = [str(n) for n in (names if names is not None else self.directions.names)]
            for n in self.names:
                if n not in self.directions:
                    raise DatasetError(f"direction {n!r} is not in the direction set ({', '.join(self.directions.names)})")
            if k is not None and int(k) != len(self.names):
                raise DatasetError(f"k={k} but {len(self.names)} directions are chosen")
            k = len(self.names)
            if w_dim is None:
                w_dim = self.directions.w_dim
        elif targets == "w":
            raise DatasetError("latent (w_t) targets need a DirectionSet to project onto (directions=)")
        self.num_ws = None if num_ws is None else int(num_ws)
        self.root = Path(root)
        self.window_frames = int(window_frames)
        self.lookahead_ms = float(lookahead_ms)
        if not self.root.is_dir():
            raise DatasetError(f"data directory {os.fspath(self.root)!r} does not exist or is not a directory")
        wavs = {p.stem: p for p in self.root.iterdir() if p.suffix.lower() == ".wav" and p.is_file()}
        npys = {p.stem: p for p in self.root.iterdir() if p.suffix.lower() == ".npy" and p.is_file()}
        names = sorted(set(wavs) & set(npys))
        if not names:
            raise DatasetError(f"no NAME.wav + NAME.npy pairs in {os.fspath(self.root)!r} "
                               f"({len(wavs)} .wav, {len(npys)} .npy files)")
        lonely = sorted(set(wavs) ^ set(npys))
        if lonely:
            n = lonely[0]
            have, miss = (".wav", ".npy") if n in wavs else (".npy", ".wav")
            raise DatasetError(f"{n}{have} has no matching {n}{miss} in {os.fspath(self.root)!r}")
        metas = {n: self._read_json(n) for n in names}
        fpss = {float(metas[n].get("fps", fps)) for n in names}
        if len(fpss) != 1:
            raise DatasetError(f"clips have different fps {sorted(fpss)}; resample the x_t files to one fps")
        self.fps = self.data_fps = fpss.pop()
        if not (math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise DatasetError(f"bad fps {self.fps!r}")
        self.step_hz = None if step_hz is None else float(step_hz)
        if self.step_hz is not None and not (math.isfinite(self.step_hz) and 1 <= self.step_hz <= 200):
            raise DatasetError(f"step_hz must be in [1, 200], got {step_hz!r}")
        if w_dim is None:
            w_dim = next((len(metas[n]["anchor"]) for n in names if "anchor" in metas[n]), default_w_dim)
        self.w_dim = int(w_dim)
        self.k = None if k is None else int(k)
        self.clips: list[Clip] = [self._load(n, wavs[n], npys[n], metas[n]) for n in names]
        if self.step_hz is not None:
            self.fps = self.step_hz                  # the sequences the trainer sees are steps

    @staticmethod
    def _directions(directions):
        if directions is None:
            return None
        if isinstance(directions, DirectionSet):
            return directions
        try:
            return DirectionSet.load(directions)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"direction set {os.fspath(directions)!r}: {exc}") from None

    def _kind(self, npy: Path, x: np.ndarray) -> str:
        if self.targets != "auto":
            return self.targets
        if x.ndim == 3:
            return "w"
        if (self.directions is not None and x.ndim == 2 and x.shape[1] == self.directions.w_dim
                and x.shape[1] != len(self.names)):
            return "w"
        return "x"

    def _project(self, name: str, npy: Path, rec: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray, float]:
        """(x [T, k], anchor [w_dim], dropped) of a latent recording w_t / ws_t."""
        d = self.directions
        w_dim = d.w_dim
        if rec.ndim not in (2, 3) or rec.shape[-1] != w_dim:
            raise DatasetError(f"{npy.name}: latent targets must be [T, {w_dim}] or [T, num_ws, {w_dim}], "
                               f"got {rec.shape}")
        num_ws = self.num_ws
        if rec.ndim == 3:
            if num_ws is not None and rec.shape[1] != num_ws:
                raise DatasetError(f"{npy.name}: has {rec.shape[1]} layers, the generator has num_ws={num_ws}")
            num_ws = int(rec.shape[1])
        elif num_ws is None:
            raise DatasetError(f"{npy.name}: [T, w_dim] latent targets need num_ws (the generator's layer count)")
        rec = rec.astype(np.float64)
        if "anchor" in meta:
            anchor = np.asarray(meta["anchor"], dtype=np.float64)
            if anchor.shape != (w_dim,):
                raise DatasetError(f"{name}.json: anchor has {anchor.size} values, expected w_dim={w_dim}")
            ref = anchor if rec.ndim == 2 else np.broadcast_to(anchor, rec.shape[1:])
        else:
            ref = rec[0]
            anchor = rec[0] if rec.ndim == 2 else rec[0, 0]
        try:
            x, dropped = d.project(rec - ref[None], num_ws, self.names)
        except ValueError as exc:
            raise DatasetError(f"{npy.name}: {exc}") from None
        return x, anchor, dropped

    def _read_json(self, name: str) -> dict:
        p = self.root / f"{name}.json"
        if not p.is_file():
            return {}
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{p.name}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{p.name}: expected a JSON object with 'fps' and/or 'anchor'")
        if "fps" in meta and not isinstance(meta["fps"], (int, float)):
            raise DatasetError(f"{p.name}: 'fps' must be a number")
        if "anchor" in meta and not (isinstance(meta["anchor"], list) and meta["anchor"]):
            raise DatasetError(f"{p.name}: 'anchor' must be a list of w_dim numbers")
        return meta

    def _load(self, name: str, wav: Path, npy: Path, meta: dict) -> Clip:
        try:
            x = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{npy.name}: cannot read ({exc})") from None
        if not np.issubdtype(x.dtype, np.floating):
            raise DatasetError(f"{npy.name}: expected float targets, got {x.dtype}")
        if x.ndim not in (2, 3) or 0 in x.shape:
            raise DatasetError(f"{npy.name}: expected x_t of shape [T, k] (or latents [T, w_dim] / "
                               f"[T, num_ws, w_dim]), got {x.shape}")
        if not np.isfinite(x).all():
            raise DatasetError(f"{npy.name}: contains NaN or infinity")
        dropped = None
        if self._kind(npy, x) == "w":
            if self.directions is None:
                raise DatasetError(f"{npy.name}: latent targets {x.shape} need a DirectionSet to project onto")
            x, anchor_w, dropped = self._project(name, npy, x, meta)
            meta = dict(meta, anchor=[float(v) for v in anchor_w])
        elif x.ndim != 2:
            raise DatasetError(f"{npy.name}: expected x_t of shape [T, k], got {x.shape}")
        if self.k is None:
            self.k = int(x.shape[1])
        elif x.shape[1] != self.k:
            raise DatasetError(f"{npy.name}: has k={x.shape[1]} components, expected k={self.k}")
        anchor = np.asarray(meta.get("anchor", np.zeros(self.w_dim)), dtype=np.float64)
        if anchor.shape != (self.w_dim,):
            raise DatasetError(f"{name}.json: anchor has {anchor.size} values, expected w_dim={self.w_dim}")
        if not np.isfinite(anchor).all():
            raise DatasetError(f"{name}.json: anchor contains NaN or infinity")
        audio = read_wav(wav)
        try:
            win = frame_windows(audio, self.step_hz or self.fps, self.window_frames, self.lookahead_ms)
        except ValueError as exc:
            raise DatasetError(f"{wav.name}: {exc}") from None
        t_audio, t_x = (win.shape[0] if self.step_hz is None else frames_in(audio.size, self.fps)), x.shape[0]
        if abs(t_audio - t_x) > LENGTH_TOLERANCE:
            raise DatasetError(f"{name}: audio is {t_audio} frames at {self.fps:g} fps but {npy.name} has "
                               f"{t_x} rows (more than {LENGTH_TOLERANCE} frame apart)")
        t = min(t_audio, t_x)
        if t < 2:
            raise DatasetError(f"{name}: only {t} frame(s); need at least 2")
        if self.step_hz is not None:                 # targets at the steps' centres
            end = round_half_up(t * SAMPLE_RATE / self.fps)
            steps = min(win.shape[0], frames_in(end, self.step_hz))
            win, x, t = win[:steps], at_step_centres(x[:t], self.fps, self.step_hz, steps), steps
        return Clip(name, np.ascontiguousarray(win[:t]), np.ascontiguousarray(x[:t], dtype=np.float32),
                    anchor.astype(np.float32), dropped)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.clips)

    def fingerprint(self) -> list:
        return [[c.name, c.frames] for c in self.clips]

    @classmethod
    def from_clips(cls, clips: Sequence[Clip], *, fps: float = 25.0, window_frames: int = 32,
                   lookahead_ms: float = 40.0) -> "MotionDataset":
        """A dataset of clips already in memory (features from :func:`frame_windows`)."""
        if not clips:
            raise DatasetError("no clips")
        self = cls.__new__(cls)
        self.root, self.fps = None, float(fps)
        self.directions, self.names, self.num_ws, self.targets = None, None, None, "x"
        self.window_frames, self.lookahead_ms = int(window_frames), float(lookahead_ms)
        self.k, self.w_dim = int(clips[0].x.shape[1]), int(clips[0].anchor.shape[0])
        for c in clips:
            if c.x.ndim != 2 or c.x.shape[1] != self.k or c.windows.shape[0] != c.x.shape[0]:
                raise DatasetError(f"{c.name}: x {c.x.shape} / windows {c.windows.shape} do not match")
            if c.windows.shape[1:] != (self.window_frames, N_MELS):
                raise DatasetError(f"{c.name}: windows {c.windows.shape} are not [T, {self.window_frames}, {N_MELS}]")
        self.clips = list(clips)
        return self
