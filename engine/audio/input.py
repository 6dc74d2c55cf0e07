"""AudioInput: PCM at any rate and layout → 16 kHz (or any ``out_rate``) mono float32, streaming.

Resampling is python-soxr's ``ResampleStream`` (libsoxr), not a hand-written filter. Pushing a
signal in any chunking gives bit-identical output to pushing it at once (libsoxr keeps its
state between chunks; checked in ``tests/engine/audio/test_audio_input.py``).

Layout: int16 (full scale 32768) or float32 (full scale 1.0); mono, or ``channels`` > 1 given
interleaved (1-D) or as ``[n, channels]``. Channels are averaged (downmix) before resampling.
An interleaved chunk may end in the middle of a multi-channel frame; the partial frame is kept
for the next push. Time is a sample count: ``samples_in`` (input frames per channel) and
``samples_out`` (output samples produced so far). The session uses one AudioInput for the
features (16 kHz) and, with ``audio_out``, a second one at the output rate for the audio it hands
out with the frames: both downmix and validate the same way.

Latency: libsoxr processes in blocks, so the output lags the input by a varying amount.
``pending_samples`` says how far behind the output is right now; :attr:`AudioInput.latency_ms`
is the worst case for a live stream of 20 ms chunks (WebRTC's Opus frame), measured once per
(rate, quality) by running libsoxr itself on 10 s of such chunks, and is what a session adds to
the latency it reports. Measured with quality "HQ" (mean / max ms): 48 kHz 21.4 / 36.6,
44.1 and 22.05 kHz 23.3 / 40.1, 11.025 kHz 47.4 / 83.8, 8 kHz 63.7 / 115.0. "LQ" roughly halves
it at 22-48 kHz (11.2 / 20.0 at 48 kHz). 16 kHz input passes through untouched (no resampler,
no delay: 0 ms).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import soxr

__all__ = ["SAMPLE_RATE", "AudioInput", "sample_format", "to_int16", "MIN_RATE", "MAX_RATE", "MAX_OUT_RATE",
           "resampler_lag_ms"]

SAMPLE_RATE = 16000
MIN_RATE = 8000
MAX_RATE = 48000
MAX_OUT_RATE = 192000
_DTYPES = ("int16", "float32")
#: the largest |float sample| accepted (60 dB over full scale 1.0): beyond it the value is not audio,
#: and the resampler's filter would overflow float32 and poison its state for the next chunk
MAX_FLOAT_SAMPLE = 1000.0
#: memoryview formats read as raw int16 bytes (a view of a typed array says its own type)
_RAW_FORMATS = ("B", "b", "c")


def finite_float32(a: np.ndarray) -> np.ndarray:
    """float32/float64 samples (full scale 1.0) as float32; ValueError for other dtypes or NaN/inf."""
    if a.dtype not in (np.float32, np.float64):
        raise ValueError(f"expected float32 samples (full scale 1.0), got {a.dtype}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError("samples contain NaN or infinity")
    if a.size and float(np.abs(a).max()) > MAX_FLOAT_SAMPLE:
        raise ValueError(f"float samples beyond ±{MAX_FLOAT_SAMPLE:g} (full scale is 1.0): "
                         f"max |x| = {float(np.abs(a).max()):g}")
    return a


@lru_cache(maxsize=64)
def resampler_lag_ms(sample_rate: int, quality: str = "HQ", chunk_ms: float = 20.0, *,
                     out_rate: int = SAMPLE_RATE) -> tuple[float, float]:
    """(mean, max) output lag in ms of libsoxr ``sample_rate`` → ``out_rate`` for a stream of
    ``chunk_ms`` chunks: after each push, how much of the pushed input has not come out yet
    (the first 5 chunks, the filter's start-up, excluded). (0, 0) when the rates are equal."""
    if int(sample_rate) == int(out_rate):
        return 0.0, 0.0
    stream = soxr.ResampleStream(int(sample_rate), int(out_rate), 1, dtype="float32", quality=quality)
    chunk = np.zeros(max(1, int(round(sample_rate * chunk_ms / 1000.0))), np.float32)
    n_in = n_out = 0
    lags = []
    for i in range(max(100, int(round(10_000.0 / chunk_ms)))):     # 10 s: the lag pattern repeats slowly
        n_in += chunk.size
        n_out += stream.resample_chunk(chunk, last=False).size
        if i >= 5:
            lags.append((n_in * out_rate / sample_rate - n_out) * 1000.0 / out_rate)
    return float(np.mean(lags)), float(np.max(lags))


class AudioInput:
    """Streaming converter to mono float32 at ``out_rate`` (default 16 kHz, the engine's clock).

    ``push(pcm)`` returns the newly available output samples; ``flush()`` drains the resampler
    at the end of a stream and leaves the object ready for a new stream.
    Bad input (wrong dtype or shape, NaN/Inf) raises ``ValueError`` before any state changes.
    """

    def __init__(self, sample_rate: int, channels: int = 1, dtype: str = "int16", *, quality: str = "HQ",
                 out_rate: int = SAMPLE_RATE):
        if isinstance(sample_rate, float) and sample_rate.is_integer():
            sample_rate = int(sample_rate)
        if not isinstance(sample_rate, (int, np.integer)) or isinstance(sample_rate, bool):
            raise ValueError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
        if not MIN_RATE <= int(sample_rate) <= MAX_RATE:
            raise ValueError(f"unsupported sample rate {sample_rate} Hz (supported: {MIN_RATE}..{MAX_RATE} Hz)")
        if not isinstance(channels, (int, np.integer)) or isinstance(channels, bool) or not 1 <= int(channels) <= 8:
            raise ValueError(f"unsupported channel count {channels!r} (supported: 1..8)")
        dtype = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported sample format {dtype!r} (supported: {', '.join(_DTYPES)})")
        if isinstance(out_rate, bool) or int(out_rate) != out_rate or not MIN_RATE <= int(out_rate) <= MAX_OUT_RATE:
            raise ValueError(f"out_rate must be an integer in [{MIN_RATE}, {MAX_OUT_RATE}] Hz, got {out_rate!r}")
        if quality not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
            raise ValueError(f"unknown soxr quality {quality!r} (QQ, LQ, MQ, HQ, VHQ)")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.dtype = dtype
        self.quality = quality
        self.out_rate = int(out_rate)
        self.samples_in = 0
        self.samples_out = 0
        self._partial = np.zeros(0, dtype=np.float32)        # interleaved samples of an incomplete frame
        self._resampler = None
        self._new_resampler()

    def _new_resampler(self) -> None:
        if self.sample_rate == self.out_rate:
            self._resampler = None
        else:
            self._resampler = soxr.ResampleStream(self.sample_rate, self.out_rate, 1, dtype="float32",
                                                  quality=self.quality)

    @property
    def latency_ms(self) -> float:
        """Worst-case resampler lag (ms) of a live stream of 20 ms chunks at this rate and
        quality (:func:`resampler_lag_ms`); 0 when no resampling is needed."""
        return resampler_lag_ms(self.sample_rate, self.quality, out_rate=self.out_rate)[1]

    @property
    def pending_samples(self) -> float:
        """Output samples (at ``out_rate``) owed for the input pushed so far but not yet produced."""
        return self.samples_in * self.out_rate / self.sample_rate - self.samples_out

    def _to_mono(self, pcm) -> np.ndarray:
        """Validate and convert one chunk to interleaved float32 (full scale 1.0); no state change."""
        if isinstance(pcm, (bytes, bytearray)) or (isinstance(pcm, memoryview) and pcm.format in _RAW_FORMATS):
            itemsize = np.dtype(self.dtype).itemsize
            if len(pcm) % itemsize:
                raise ValueError(f"{len(pcm)} bytes is not a whole number of {self.dtype} samples")
            pcm = np.frombuffer(pcm, dtype=self.dtype)
        a = np.asarray(pcm)
        if a.ndim == 2:
            if a.shape[1] != self.channels:
                raise ValueError(f"expected [n, {self.channels}] samples, got shape {a.shape}")
            a = a.reshape(-1)
        elif a.ndim != 1:
            raise ValueError(f"expected 1-D interleaved or [n, {self.channels}] samples, got shape {a.shape}")
        if self.dtype == "int16":
            if a.dtype != np.int16:
                raise ValueError(f"expected int16 samples, got {a.dtype}")
            return a.astype(np.float32) * np.float32(1.0 / 32768.0)
        return finite_float32(a)

    def push(self, pcm) -> np.ndarray:
        """Feed one chunk; returns the newly available mono float32 samples at ``out_rate`` (maybe none)."""
        x = self._to_mono(pcm)
        if self.channels > 1:
            if self._partial.size:
                x = np.concatenate([self._partial, x])
            whole = x.size - x.size % self.channels
            self._partial = x[whole:].copy()
            x = x[:whole].reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        self.samples_in += x.size
        if self._resampler is None:
            y = np.array(x, dtype=np.float32, copy=True)
        else:
            y = self._resampler.resample_chunk(x, last=False) if x.size else np.zeros(0, np.float32)
        self.samples_out += y.size
        return y

    def flush(self) -> np.ndarray:
        """End of stream: return what the resampler still holds; then the next push starts a new
        stream (fresh resampler, ``samples_in``/``samples_out`` back to 0)."""
        self._partial = np.zeros(0, dtype=np.float32)
        if self._resampler is None:
            y = np.zeros(0, dtype=np.float32)
        else:
            y = np.asarray(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True),
                           dtype=np.float32)
            self._new_resampler()
        self.samples_in = self.samples_out = 0
        return y


def sample_format(pcm) -> str:
    """``"int16"`` or ``"float32"``: the sample format of a chunk (raw bytes are int16; a typed
    memoryview says its own type); ValueError for others."""
    if isinstance(pcm, (bytes, bytearray)) or (isinstance(pcm, memoryview) and pcm.format in _RAW_FORMATS):
        return "int16"
    dt = np.asarray(pcm).dtype if not hasattr(pcm, "dtype") else np.dtype(pcm.dtype)
    if dt == np.int16:
        return "int16"
    if dt in (np.float32, np.float64):
        return "float32"
    raise ValueError(f"unsupported sample format {dt} (int16, or float32 with full scale 1.0)")


def to_int16(x: np.ndarray) -> np.ndarray:
    """float samples (full scale 1.0) → int16, rounded and clipped."""
    return np.clip(np.round(np.asarray(x, np.float32) * 32768.0), -32768, 32767).astype(np.int16)
