"""AvatarSession: push audio, pull frames — one clock, per-stage timings.

The data flow of DESIGN.md as plain function calls::

    push_audio(pcm, rate) ─► AudioInput (→ 16 kHz mono) ─► FeatureStream ─► [ready frames]
    next_frame() ─► MotionDriver.step(features) ─► LatentPath(x) = ws ─► engine.synthesize(ws)
                 ─► engine.to_uint8(img) ─► Frame ─► a FrameSink (engine.sinks), or the caller

**One clock.** Time inside a session is a count of 16 kHz samples. Video frame k covers the audio
``[S(k), S(k+1))`` with ``S(k) = round(k·16000/fps)`` (halves rounded up, as FeatureStream does);
``Frame.pts = S(k)``. Frame k is *ready* once the feature stream has audio up to
``S(k+1) + lookahead`` (the FeatureStream rule), so a frame never shows audio that has not
arrived. :attr:`AvatarSession.clock` counts the 16 kHz samples that reached the feature stream
(pushed audio that left the resampler, plus silence); audio still inside the resampler is
:attr:`engine.audio.input.AudioInput.pending_samples` further on. The audio side (resampler,
feature stream, ready frames, audio out) is :class:`engine.audio.timeline.AudioTimeline`; the
session adds the motion, the latent path and synthesis on top.

**Latency.** :attr:`AvatarSession.latency_ms` = the resampler's worst-case lag for the current
input rate (``AudioInput.latency_ms``, 0 at 16 kHz) + ``FeatureStream.latency_ms`` (the
lookahead): how long after the end of frame k's audio, at the earliest, frame k can be built.

**Audio out, offset 0.** With ``audio_out=True`` each Frame carries exactly the pushed samples
``[O(k), O(k+1))``, ``O(k) = round(k·audio_out_rate/fps)`` (zeros where silence was filled), so
playing them back to back while showing frame k at k/fps is in sync by construction; see
:mod:`engine.audio.output`.

**Silence fill.** ``next_frame(fill_silence=True)`` is for a stream whose audio may be late or
absent (no mic yet): when frame k is not ready, audio held inside the resampler is flushed out
first (it was pushed, so it is not "missing"), then exactly the missing samples are added as
zeros, so idle motion keeps running. Audio pushed afterwards continues the timeline after the
zeros.

**Threads.** ``push_audio``, ``interrupt``, ``set_identity`` and ``set_driver`` may be called
from one thread (an event loop) while another thread calls ``next_frame``: session state is
guarded by a lock that is *not* held during synthesis, and synthesis itself is serialised per
engine. Calls to ``next_frame`` are serialised too.

**Bounded.** At most ``max_pending_s`` seconds of ready frames wait for ``next_frame``; beyond
that the oldest are stepped through the motion driver (motion stays continuous), dropped, and
their audio discarded (counted in the next Frame's ``dropped``).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Optional

import numpy as np
import torch

from engine.audio.features import round_half_up
from engine.audio.input import SAMPLE_RATE, sample_format
from engine.audio.timeline import AudioTimeline
from engine.avatar import DEFAULT_BASIS_SAMPLES, AvatarEngine, default_directions
from engine.drivers import feature_needs, make_driver
from engine.frames import STAGES, STATS_WINDOW, Frame, stage_summary
from engine.latent.path import LatentPath
from engine.motion.base import MotionDriver

__all__ = ["AvatarSession", "AvatarEngine", "Frame", "default_directions", "STAGES",
           "DEFAULT_LOOKAHEAD_MS", "DEFAULT_BASIS_SAMPLES"]

DEFAULT_LOOKAHEAD_MS = 40.0


class AvatarSession:
    """One avatar stream: push audio, pull frames (see the module docstring for the clock).

    Args:
        engine: the shared :class:`AvatarEngine` (None: a new demo engine).
        fps: video frames per second.
        identity: the face (see :meth:`set_identity`).
        driver: the motion (see :meth:`set_driver`).
        seed: seed of the motion driver (idle blinks/sway, LSTM motion noise).
        lookahead_ms: feature lookahead; None = the driver's (``driver.lookahead_ms``) or 40 ms.
        output: "uint8" (Frame.image [H, W, 3] uint8 RGB) or "tensor" ([3, H, W] float in
            [-1, 1] on the engine's device, at the output resolution).
        audio_out: keep the pushed audio and hand it out with the frames (``Frame.audio``).
        audio_out_rate: sample rate of ``Frame.audio`` (8000 .. 192000).
        max_pending_s: most seconds of ready frames kept for ``next_frame``.
    """

    def __init__(self, engine: Optional[AvatarEngine] = None, *, fps: float = 25.0, identity=0, driver="default",
                 seed: int = 0, lookahead_ms: Optional[float] = None, output: str = "uint8",
                 audio_out: bool = False, audio_out_rate: int = 48000, max_pending_s: float = 30.0):
        fps = float(fps)
        if not (math.isfinite(fps) and 0 < fps <= 240):
            raise ValueError(f"fps must be in (0, 240], got {fps!r}")
        if output not in ("uint8", "tensor"):
            raise ValueError(f"output must be 'uint8' or 'tensor', got {output!r}")
        if isinstance(audio_out_rate, bool) or int(audio_out_rate) != audio_out_rate \
                or not 8000 <= int(audio_out_rate) <= 192000:
            raise ValueError(f"audio_out_rate must be an integer in [8000, 192000] Hz, got {audio_out_rate!r}")
        if lookahead_ms is not None:
            lookahead_ms = float(lookahead_ms)
            if not (math.isfinite(lookahead_ms) and 0 <= lookahead_ms <= 1000):
                raise ValueError(f"lookahead_ms must be in [0, 1000], got {lookahead_ms!r}")
        max_pending_s = float(max_pending_s)
        if not (math.isfinite(max_pending_s) and max_pending_s > 0):
            raise ValueError(f"max_pending_s must be positive, got {max_pending_s!r}")
        self.engine = engine if engine is not None else AvatarEngine()
        self.fps = fps
        self.seed = int(seed)
        self.output = output
        self.audio_out = bool(audio_out)
        self.audio_out_rate = int(audio_out_rate)
        self.max_pending_frames = max(1, int(math.ceil(max_pending_s * fps)))
        self._lock = threading.RLock()          # session state
        self._pull_lock = threading.Lock()      # one next_frame at a time
        self._closed = False

        self._frames_out = 0
        self._dropped_total = 0
        self._timings: deque = deque(maxlen=STATS_WINDOW)

        drv = self._make_driver(driver)
        need = feature_needs(drv)
        if lookahead_ms is None:
            lookahead_ms = need[0] if need[0] is not None else DEFAULT_LOOKAHEAD_MS
        elif need[0] is not None and abs(need[0] - lookahead_ms) > 1e-9:
            raise ValueError(f"the driver was trained with a {need[0]:g} ms lookahead, not {lookahead_ms:g} ms")
        # the audio side: resampler, features, ready frames, audio out (all on the 16 kHz clock)
        self._audio = AudioTimeline(fps, lookahead_ms, need[1],
                                    audio_out_rate=self.audio_out_rate if self.audio_out else None,
                                    max_pending_frames=self.max_pending_frames,
                                    on_overflow=lambda f: self._driver.step(f))
        self._anchor = self.engine.identity_ws(identity)
        self._install_driver(drv)
        self.engine.attach()

    # -- properties --------------------------------------------------------------------------
    @property
    def clock(self) -> int:
        """16 kHz samples of audio that reached the feature stream (pushed + silence-filled)."""
        return self._audio.clock

    @property
    def pushed_samples(self) -> float:
        """16 kHz samples of audio pushed so far (silence included), counting what still sits in
        the resampler: where the next pushed sample lands on the clock (fractional mid-resampler)."""
        with self._lock:
            return self._audio.pushed_samples

    @property
    def driver(self) -> MotionDriver:
        return self._driver

    @property
    def lookahead_ms(self) -> float:
        return self._audio.lookahead_ms

    @property
    def latency_ms(self) -> float:
        """Resampler lag estimate of the current input (``AudioInput.latency_ms``; 0 before any
        audio and at 16 kHz) + ``FeatureStream.latency_ms`` (lookahead)."""
        return self._audio.latency_ms

    @property
    def identity_ws(self) -> torch.Tensor:
        """The current anchor ws [num_ws, w_dim]."""
        return self._anchor.clone()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- frame time ----------------------------------------------------------------------------
    def frame_start(self, k: int) -> int:
        """S(k) = round(k · 16000 / fps), 16 kHz samples."""
        return self._audio.frame_start(k)

    # -- drivers -----------------------------------------------------------------------------
    def _make_driver(self, spec) -> MotionDriver:
        return make_driver(spec, self.engine, fps=self.fps, seed=self.seed)

    def _install_driver(self, drv: MotionDriver) -> None:
        basis, masks = self.engine.directions.to_path(self.engine.num_ws, drv.names)
        path = LatentPath(basis, self.engine.num_ws, layer_masks=masks, device=self.engine.device)
        path.set_anchor(ws=self._anchor)
        drv.reset(self._anchor)
        self._driver, self._path = drv, path

    # -- audio in ------------------------------------------------------------------------------
    def push_audio(self, pcm, sample_rate: int, channels: int = 1) -> None:
        """Feed PCM: int16 (or bytes of int16) or float32/float64 (full scale 1.0), mono or
        ``channels`` interleaved / [n, channels], 8-48 kHz. A new rate, layout or sample format
        starts a new input stream (the old one is flushed first). ValueError on bad input, with
        the session unchanged."""
        if torch.is_tensor(pcm):
            if pcm.dtype not in (torch.int16, torch.float32, torch.float64):
                raise ValueError(f"unsupported sample format {str(pcm.dtype).removeprefix('torch.')} "
                                 "(int16, or float32 with full scale 1.0)")
            pcm = pcm.detach().cpu().numpy()
        dtype = sample_format(pcm)
        with self._lock:
            self._check_open()
            self._audio.push(pcm, sample_rate, channels, dtype)

    def push_silence(self, seconds: float) -> None:
        """Let the clock run on with ``seconds`` of zeros (e.g. no mic yet). Audio still inside
        the resampler is flushed out first, so the silence comes after everything pushed."""
        s = float(seconds)
        if not (math.isfinite(s) and 0 <= s <= 3600):
            raise ValueError(f"seconds must be in [0, 3600], got {seconds!r}")
        with self._lock:
            self._check_open()
            self._audio.push_silence(round_half_up(s * SAMPLE_RATE))

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")

    # -- frames out ----------------------------------------------------------------------------
    def frames_ready(self) -> int:
        """Frames whose audio is complete (``next_frame`` returns one without filling silence)."""
        with self._lock:
            return self._audio.ready_count()

    def next_frame(self, *, fill_silence: bool = False, latest: bool = False) -> Optional[Frame]:
        """The next frame, or None when no frame's audio is complete (``fill_silence=False``).

        ``fill_silence``: if the next frame's audio has not been pushed, fill exactly the missing
        samples with silence first (idle motion runs on without a mic).
        ``latest``: step the motion through every ready frame but synthesize only the newest
        (``Frame.dropped`` counts the others): bounded latency when the caller fell behind.
        """
        with self._pull_lock:
            with self._lock:
                self._check_open()
                n = self._audio.ready_count()
                if n == 0 and fill_silence:
                    self._audio.fill_next()
                    n = self._audio.ready_count()
                if n == 0:
                    return None
                take, dropped, audio = self._audio.take(n if latest else 1)
                t0 = time.perf_counter()
                x = None
                for _, f, _ in take:
                    x = self._driver.step(f)
                t1 = time.perf_counter()
                x = np.asarray(x, dtype=np.float32)
                ws = self._path(x)
                t2 = time.perf_counter()
                k, feats, _ = take[-1]
                feat_ms = sum(t[2] for t in take)
                latency = self.latency_ms
                engine, output = self.engine, self.output
            # synthesis outside the session lock: push_audio from another thread goes on meanwhile
            img = engine.synthesize(ws)
            if img.device.type == "cuda":
                torch.cuda.synchronize(img.device)
            t3 = time.perf_counter()
            if output == "uint8":
                image = engine.to_uint8(img)[0]
            else:
                image = engine.resize(img)[0]
                if image.device.type == "cuda":
                    torch.cuda.synchronize(image.device)
            t4 = time.perf_counter()
            timings = {"features": feat_ms, "motion": (t1 - t0) * 1e3, "latent": (t2 - t1) * 1e3,
                       "synthesis": (t3 - t2) * 1e3, "convert": (t4 - t3) * 1e3}
            timings["total"] = sum(timings.values())
            pts = self.frame_start(k)
            frame = Frame(index=k, pts=pts, time_s=pts / SAMPLE_RATE, image=image, x=x.copy(),
                          voiced=float(feats.voiced), rms=float(feats.rms), audio=audio,
                          audio_rate=self.audio_out_rate if self.audio_out else None, dropped=dropped,
                          timings=timings, latency_ms=latency)
            with self._lock:
                self._frames_out += 1
                self._dropped_total += dropped
                self._timings.append(timings)
            return frame

    # -- control -------------------------------------------------------------------------------
    def set_identity(self, identity, *, truncation_psi: Optional[float] = None) -> None:
        """Change the face: int seed (mapped with ``truncation_psi``, default the engine's), w
        [w_dim] / ws [num_ws, w_dim] / [1, num_ws, w_dim] (array or tensor; truncated only when
        ``truncation_psi`` is given), or a path to a .npy with one of those. Resets the anchor
        and the driver (``driver.reset(anchor)``). ValueError / FileNotFoundError, unchanged."""
        ws = self.engine.identity_ws(identity, truncation_psi)
        with self._lock:
            self._check_open()
            self._path.set_anchor(ws=ws)
            self._anchor = ws
            self._driver.reset(ws)

    def set_driver(self, driver) -> None:
        """``"default"`` (the engine's :attr:`AvatarEngine.default_driver`: the trained LSTM of the
        demo generator over the idle driver's blinks, else idle), ``"idle"``, ``"idle:no-priors"`` (its
        head, gaze and blinks do not answer speech), ``"lstm:PATH.safetensors"``,
        ``"lstm+idle:PATH.safetensors"`` (the model's directions, the idle driver's for the rest),
        ``"trajectory:PATH.npy"`` or a MotionDriver
        (its ``fps`` must be the session's, its ``names`` in the engine's direction set). A driver
        trained with another feature lookahead/window can only be set before any audio (or right
        after :meth:`interrupt`), because the feature stream is rebuilt then."""
        with self._lock:
            self._check_open()
            drv = self._make_driver(driver)
            look, window = feature_needs(drv)
            audio = self._audio
            same_look = look is None or abs(look - audio.lookahead_ms) < 1e-9
            same_window = window is None or round_half_up(window / 10.0) == audio.window_frames
            if not (same_look and same_window):
                if not audio.is_fresh():
                    raise ValueError(f"this driver needs {look if look is not None else audio.lookahead_ms:g} ms "
                                     f"lookahead and a {window if window is not None else 'default'} ms mel window; "
                                     f"the session streams {audio.lookahead_ms:g} ms: set it before pushing audio or "
                                     "after interrupt(), or create the session with it")
                audio.restart(look if look is not None else audio.lookahead_ms, window)
            self._install_driver(drv)

    def interrupt(self) -> float:
        """Barge-in: ``driver.flush()`` (mouth back to rest within 40 ms by default) and drop all audio
        pushed after the last returned frame (ready frames, resampler contents, audio out): the
        clock goes back to the start of the next frame, and new audio continues from there.
        Returns the seconds of pushed audio that were dropped (for callers that keep their own
        account of the audio timeline)."""
        with self._lock:
            self._check_open()
            self._driver.flush()
            dropped = self._audio.restart(self._audio.lookahead_ms, self._audio.window_ms)
            self._audio.overflow_dropped = 0
            return dropped

    def stats(self) -> dict:
        """``frames`` and ``dropped`` so far, ``latency_ms``, and per stage p50/p95 ms over the last
        250 frames: ``{"timings": {"synthesis": {"p50": .., "p95": ..}, ...}}``."""
        with self._lock:
            out = {"frames": self._frames_out, "dropped": self._dropped_total, "latency_ms": self.latency_ms}
            rows = list(self._timings)
        return {**out, **stage_summary(rows)}

    def close(self) -> None:
        """Release the session's buffers; later calls raise RuntimeError (close twice is fine)."""
        with self._lock:
            if not self._closed:
                self.engine.detach()
            self._closed = True
            self._audio.clear()

    def __enter__(self) -> "AvatarSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
