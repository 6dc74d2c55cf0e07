"""Streaming log-mel + voice activity → one ``FrameFeatures`` per video frame.

Log-mel (defaults: 80 bands, 16 kHz, 25 ms periodic-Hann window = ``n_fft`` 400, 10 ms hop 160,
power 2, slaney mel scale and slaney area normalisation as ``librosa.filters.mel`` with
``htk=False, norm="slaney"``):

    mel[j] = log(max(M · |rfft(hann · x[j·hop : j·hop + win])|², 1e-10))

Frame j covers samples ``[j·hop, j·hop + win)`` and nothing else (no centre padding), so a frame
is computed once all its samples have arrived and never changes afterwards. The arithmetic is
float64 (rounded to float32 at the end), row by row independent of how many frames a call
computes, so the streaming output over any chunking equals the offline ``log_mel`` of the whole
signal (bit-identical in our tests; the contract is ≤ 1e-6). This matches
``librosa.feature.melspectrogram(y, sr=16000, n_fft=400, hop_length=160, center=False,
power=2.0, n_mels=80, htk=False, norm="slaney")`` followed by the same log floor.

Input at 32 or 48 kHz (WebRTC's Opus decodes at 48 kHz) needs no resampler: ``FeatureStream(...,
sample_rate=48000)`` computes the same features at the input rate: window, hop and FFT m = rate /
16 kHz times as long (1200 / 480 at 48 kHz, the same 25 ms / 10 ms and the same 40 Hz FFT bins),
the same mel filters over the bins up to 8 kHz, power / m², and webrtcvad at the input rate. It
differs from resampling first only by what the resampler's anti-alias filter would have taken
away near and above 8 kHz (``benchmarks.native_features`` measures it), and removes the
resampler's lag (36.6 ms worst case at 48 kHz). Every time below stays in 16 kHz samples, the
session's clock: a sample count at the input rate is m times as large.

Video frame k covers audio ``[round(k·sr/fps), round((k+1)·sr/fps))``. Its features are emitted
once audio up to ``t_end = round((k+1)·sr/fps) + lookahead`` has arrived (and the webrtcvad
frames overlapping the interval are complete), never earlier, so streaming never looks past
what has arrived and every feature is a function of the signal prefix alone.

Bad input: ``push`` raises ``ValueError`` for NaN/Inf, non-float or non-1-D arrays *before* any
state changes; an empty push returns ``[]``. Silence gives ``voiced=0``, ``rms=0`` and a mel
window at the log floor ``LOG_FLOOR`` = log(1e-10).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import webrtcvad

from .input import SAMPLE_RATE, finite_float32, to_int16

__all__ = ["FrameFeatures", "FeatureStream", "LogMel", "log_mel", "mel_filterbank", "NATIVE_RATES",
           "N_MELS", "WIN_LENGTH", "HOP_LENGTH", "POWER_FLOOR", "LOG_FLOOR", "round_half_up"]

N_MELS = 80
WIN_LENGTH = 400           # 25 ms at 16 kHz (also n_fft)
HOP_LENGTH = 160           # 10 ms
POWER_FLOOR = 1e-10
LOG_FLOOR = float(np.float32(math.log(POWER_FLOOR)))
#: input rates whose features are computed at the input rate (multiples of 16 kHz that webrtcvad reads)
NATIVE_RATES = (16000, 32000, 48000)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``): linear below 1 kHz, log above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_t = f >= min_log_hz
    mels = np.where(log_t, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = WIN_LENGTH, n_mels: int = N_MELS,
                   fmin: float = 0.0, fmax: Optional[float] = None) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular slaney-normalised mel filters, as ``librosa.filters.mel``
    (htk=False, norm="slaney"), rounded to float32 like librosa's default output."""
    fmax = sr / 2.0 if fmax is None else float(fmax)
    if not 0.0 <= fmin < fmax <= sr / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    fftfreqs = np.fft.rfftfreq(n_fft, d=1.0 / sr)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


class LogMel:
    """Log-mel of complete frames: ``frames [n, win]`` float → ``[n, n_mels]`` float32.
    ``fmax`` limits the mel filters (None: sr / 2); the power is multiplied by ``power_scale``."""

    def __init__(self, n_mels: int = N_MELS, win_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH,
                 sr: int = SAMPLE_RATE, *, fmax: Optional[float] = None, power_scale: float = 1.0):
        if not (isinstance(win_length, int) and isinstance(hop_length, int) and 0 < hop_length <= win_length):
            raise ValueError(f"need integers 0 < hop_length <= win_length, got {hop_length}, {win_length}")
        self.n_mels, self.win_length, self.hop_length, self.sr = int(n_mels), win_length, hop_length, sr
        self.window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        fb = mel_filterbank(sr, win_length, n_mels, fmax=fmax).astype(np.float64) * float(power_scale)
        used = int(np.flatnonzero(fb.any(axis=0)).max()) + 1                 # FFT bins with a weight
        self.filters_t = torch.from_numpy(fb[:, :used].T.copy())

    def frames(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float64))
        if x.ndim != 2 or x.shape[1] != self.win_length:
            raise ValueError(f"frames must be [n, {self.win_length}], got {tuple(x.shape)}")
        spec = torch.fft.rfft(x * self.window, dim=1)[:, :self.filters_t.shape[0]]
        power = spec.real.square() + spec.imag.square()                 # [n, win//2 + 1]
        mel = power @ self.filters_t                                      # [n, n_mels]
        return torch.log(torch.clamp(mel, min=POWER_FLOOR)).to(torch.float32).numpy()

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Offline log-mel of a whole signal: frame j covers ``[j·hop, j·hop + win)``."""
        x = _check_samples(samples)
        n = 0 if x.size < self.win_length else (x.size - self.win_length) // self.hop_length + 1
        if n == 0:
            return np.zeros((0, self.n_mels), dtype=np.float32)
        view = np.lib.stride_tricks.sliding_window_view(x, self.win_length)[::self.hop_length][:n]
        return self.frames(view)


_DEFAULT_LOG_MEL: Optional[LogMel] = None


def log_mel(samples_16k: np.ndarray) -> np.ndarray:
    """Offline log-mel [n_frames, 80] float32 of 16 kHz samples (defaults above); identical to
    the frames ``FeatureStream`` computes while streaming."""
    global _DEFAULT_LOG_MEL
    if _DEFAULT_LOG_MEL is None:
        _DEFAULT_LOG_MEL = LogMel()
    return _DEFAULT_LOG_MEL(samples_16k)


def _check_samples(samples) -> np.ndarray:
    a = np.asarray(samples)
    if a.ndim != 1:
        raise ValueError(f"expected 1-D mono samples, got shape {a.shape}")
    return finite_float32(a)


@dataclass(frozen=True)
class FrameFeatures:
    """What the motion step for video frame k sees."""
    frame_index: int        # video frame k
    t_end: int              # 16 kHz samples (the clock) covered: round((k+1)/fps·sr) + lookahead (clipped at flush)
    mel: np.ndarray         # [window_frames, n_mels] float32 log-mel, frames ending at or before t_end
    rms: float              # RMS of the samples in [k/fps, (k+1)/fps) (full scale 1.0)
    voiced: float           # overlap-weighted fraction of webrtcvad frames voiced in that interval, 0..1


def round_half_up(x: float) -> int:
    """Rounding with halves up: the frame boundaries S(k) = round_half_up(k · 16000 / fps)."""
    return int(math.floor(x + 0.5))


class FeatureStream:
    """Samples at ``sample_rate`` (16 kHz, or 32 / 48 kHz without resampling) in, ``FrameFeatures``
    per video frame out, as soon as each is complete. Lengths and times are in 16 kHz samples."""

    def __init__(self, fps: float = 25.0, lookahead_ms: float = 40.0, window_ms: float = 320.0,
                 vad_mode: int = 2, *, vad_frame_ms: int = 20, n_mels: int = N_MELS,
                 win_length: int = WIN_LENGTH, hop_length: int = HOP_LENGTH, sample_rate: int = SAMPLE_RATE):
        fps = float(fps)
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ValueError(f"fps must be in (0, 1000], got {fps!r}")
        lookahead_ms = float(lookahead_ms)
        if not (math.isfinite(lookahead_ms) and 0 <= lookahead_ms <= 1000):
            raise ValueError(f"lookahead_ms must be in [0, 1000], got {lookahead_ms!r}")
        window_ms = float(window_ms)
        if isinstance(sample_rate, bool) or sample_rate not in NATIVE_RATES:
            raise ValueError(f"sample_rate must be one of {NATIVE_RATES} Hz, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        m = self._m = self.sample_rate // SAMPLE_RATE          # input samples per 16 kHz sample
        self.log_mel = LogMel(n_mels, win_length * m, hop_length * m, self.sample_rate,
                              fmax=SAMPLE_RATE / 2, power_scale=1.0 / (m * m))
        hop_ms = 1000.0 * hop_length / SAMPLE_RATE
        if not (math.isfinite(window_ms) and window_ms >= hop_ms):
            raise ValueError(f"window_ms must be at least one hop ({hop_ms} ms), got {window_ms!r}")
        if vad_mode not in (0, 1, 2, 3):
            raise ValueError(f"vad_mode must be 0, 1, 2 or 3, got {vad_mode!r}")
        if vad_frame_ms not in (10, 20, 30):
            raise ValueError(f"vad_frame_ms must be 10, 20 or 30 (webrtcvad), got {vad_frame_ms!r}")
        self.fps = fps
        self.lookahead_ms = lookahead_ms
        self.lookahead_samples = round_half_up(lookahead_ms * SAMPLE_RATE / 1000.0)
        self.window_frames = round_half_up(window_ms / hop_ms)
        self.vad_mode = int(vad_mode)
        self.vad_frame = SAMPLE_RATE * int(vad_frame_ms) // 1000
        self.n_mels = int(n_mels)
        self.win_length, self.hop_length = win_length, hop_length
        # Wait after the end of frame k's interval before it can be emitted: the lookahead, or
        # the rest of the webrtcvad frame straddling the interval end when that is longer.
        period = max(1, min(10_000, round_half_up(fps) * 100))
        wait = max(self.ready_at(k) - self._bounds(k)[1] for k in range(period))
        self.latency_samples = int(wait)
        self.reset()

    # -- time bookkeeping ---------------------------------------------------------------------
    def _bounds(self, k: int) -> tuple[int, int]:
        return (round_half_up(k * SAMPLE_RATE / self.fps), round_half_up((k + 1) * SAMPLE_RATE / self.fps))

    def _t_end(self, k: int) -> int:
        return self._bounds(k)[1] + self.lookahead_samples

    def ready_at(self, k: int) -> int:
        """Samples (of this stream) that must have arrived before frame k's features are emitted."""
        end = self._bounds(k)[1]
        vad_end = -(-end // self.vad_frame) * self.vad_frame
        return max(end + self.lookahead_samples, vad_end)

    @property
    def latency_ms(self) -> float:
        """How long after the end of frame k's audio interval its features are ready (the
        lookahead, or more when a webrtcvad frame straddles the interval end). Mel frames and
        the window need no extra wait: only frames ending at or before ``t_end`` are used."""
        return 1000.0 * self.latency_samples / SAMPLE_RATE

    @property
    def samples_received(self) -> int:
        """16 kHz samples received (at 32 / 48 kHz: whole ones; see :attr:`samples_pending`)."""
        return self._n // self._m

    @property
    def samples_pending(self) -> float:
        """The fraction of a 16 kHz sample received beyond :attr:`samples_received` (0 at 16 kHz)."""
        return (self._n % self._m) / self._m

    def silent_at(self, sample_rate: int) -> "FeatureStream":
        """The same stream at another input rate, at the same point, for a stream that has received
        only silence so far: silence has the same features at any rate, so frames continue
        exactly (a received fraction of a 16 kHz sample is dropped)."""
        window_ms = self.window_frames * 1000.0 * self.hop_length / SAMPLE_RATE
        new = FeatureStream(self.fps, self.lookahead_ms, window_ms, self.vad_mode,
                            vad_frame_ms=self.vad_frame * 1000 // SAMPLE_RATE, n_mels=self.n_mels,
                            win_length=self.win_length, hop_length=self.hop_length, sample_rate=sample_rate)
        m = new._m
        new._k, new._n = self._k, self.samples_received * m
        win, hop, f = new.win_length * m, new.hop_length * m, new.vad_frame * m
        start = new._bounds(new._k)[0] * m
        t_end = min(new._t_end(new._k) * m, new._n)
        done = (new._n - win) // hop + 1 if new._n >= win else 0          # mel frames complete
        new._mel_start = min(done, max(0, (t_end - win) // hop - new.window_frames + 1))
        new._mel = np.full((done - new._mel_start, new.n_mels), LOG_FLOOR, dtype=np.float32)
        new._vad_start = min(start // f, new._n // f)
        new._vad = np.zeros(new._n // f - new._vad_start, dtype=np.float32)
        new._buf_start = min(start, done * hop, (new._n // f) * f, new._n)
        new._buf = np.zeros(new._n - new._buf_start, dtype=np.float32)
        return new

    def reset(self) -> None:
        """Start a new stream at sample 0, frame 0 (webrtcvad's state, e.g. its hangover, too)."""
        self._vad_engine = webrtcvad.Vad(self.vad_mode)
        self._n = 0
        self._k = 0
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0
        self._mel = np.zeros((0, self.n_mels), dtype=np.float32)
        self._mel_start = 0
        self._vad = np.zeros(0, dtype=np.float32)
        self._vad_start = 0

    # -- streaming ------------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> List[FrameFeatures]:
        """Feed mono float samples at ``sample_rate``; returns every frame whose window is now complete."""
        x = _check_samples(samples)
        if x.size == 0:
            return []
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
        self._n += x.size
        self._advance()
        out = []
        while self.ready_at(self._k) * self._m <= self._n:
            out.append(self._features(self._k, self._t_end(self._k)))
            self._k += 1
        self._trim()
        return out

    def flush(self) -> List[FrameFeatures]:
        """End of stream: emit the frames whose interval has started, with ``t_end`` clipped to the
        samples that exist (a trailing incomplete webrtcvad frame counts as unvoiced), then reset."""
        out = []
        while self._bounds(self._k)[0] * self._m < self._n:
            out.append(self._features(self._k, min(self._t_end(self._k) * self._m, self._n) // self._m))
            self._k += 1
        self.reset()
        return out

    def _advance(self) -> None:
        """Compute every mel and VAD frame that is complete (positions at the input rate here)."""
        m = self._m
        win, hop = self.win_length * m, self.hop_length * m
        j0 = self._mel_start + self._mel.shape[0]
        j1 = (self._n - win) // hop + 1 if self._n >= win else 0
        if j1 > j0:
            off = j0 * hop - self._buf_start
            seg = self._buf[off: off + (j1 - 1 - j0) * hop + win]
            view = np.lib.stride_tricks.sliding_window_view(seg, win)[::hop]
            self._mel = np.concatenate([self._mel, self.log_mel.frames(view)])
        f = self.vad_frame * m
        i0 = self._vad_start + self._vad.size
        i1 = self._n // f
        if i1 > i0:
            off = i0 * f - self._buf_start
            seg = self._buf[off: off + (i1 - i0) * f]
            pcm = to_int16(seg).astype("<i2", copy=False)            # webrtcvad reads little-endian int16
            flags = [self._vad_engine.is_speech(pcm[i * f:(i + 1) * f].tobytes(), self.sample_rate)
                     for i in range(i1 - i0)]
            self._vad = np.concatenate([self._vad, np.asarray(flags, dtype=np.float32)])

    def _features(self, k: int, t_end: int) -> FrameFeatures:
        m = self._m
        start, end = (b * m for b in self._bounds(k))                  # at the input rate
        end = min(end, self._n)
        seg = self._buf[start - self._buf_start: end - self._buf_start]
        rms = float(np.sqrt(np.mean(np.square(seg, dtype=np.float64)))) if seg.size else 0.0
        f = self.vad_frame * m
        i_hi = min(-(-end // f), self._vad_start + self._vad.size)
        num = den = 0
        for i in range(start // f, i_hi):
            overlap = min(end, (i + 1) * f) - max(start, i * f)
            if overlap > 0:
                den += overlap
                num += overlap * float(self._vad[i - self._vad_start])
        voiced = float(num / den) if den else 0.0
        last = (t_end - self.win_length) // self.hop_length            # -1 when no frame fits yet
        first = last - self.window_frames + 1
        mel = np.full((self.window_frames, self.n_mels), LOG_FLOOR, dtype=np.float32)
        lo = max(first, 0)
        if last >= lo:
            mel[lo - first:] = self._mel[lo - self._mel_start: last + 1 - self._mel_start]
        return FrameFeatures(frame_index=k, t_end=int(t_end), mel=mel, rms=rms, voiced=voiced)

    def _trim(self) -> None:
        """Drop samples, mel frames and VAD flags that no future frame needs."""
        m = self._m
        win, hop, f = self.win_length * m, self.hop_length * m, self.vad_frame * m
        start_k = self._bounds(self._k)[0] * m
        t_end = min(self._t_end(self._k) * m, self._n)                    # flush may clip it to _n
        keep_mel = max(0, (t_end - win) // hop - self.window_frames + 1)
        keep_mel = min(keep_mel, self._mel_start + self._mel.shape[0])
        if keep_mel > self._mel_start:
            self._mel = self._mel[keep_mel - self._mel_start:]
            self._mel_start = keep_mel
        keep_vad = min(start_k // f, self._vad_start + self._vad.size)
        if keep_vad > self._vad_start:
            self._vad = self._vad[keep_vad - self._vad_start:]
            self._vad_start = keep_vad
        next_mel = (self._mel_start + self._mel.shape[0]) * hop
        next_vad = (self._vad_start + self._vad.size) * f
        keep = min(start_k, next_mel, next_vad, self._n)
        if keep > self._buf_start:
            self._buf = self._buf[keep - self._buf_start:]
            self._buf_start = keep
