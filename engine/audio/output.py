"""AudioOut: the audio a session hands out with its frames, on the session's timeline.

The pushed audio goes through a second :class:`~engine.audio.input.AudioInput` (the same
validation and downmix as the features' one) at the output rate, then into an int16 mono buffer
addressed by absolute sample position: ``[base, base + len)``. The session cuts frame k's samples
``[O(k), O(k+1))`` out of it, pads it with zeros where it filled silence, and cuts it back when
it drops pushed audio (``interrupt``). A 48 kHz int16 mono input at a 48 kHz output comes back
bit for bit.

The session's guarantee: with ``audio_out=True`` the session keeps the pushed audio as int16 mono
at ``audio_out_rate`` (copied as is when the input already has that rate; otherwise resampled
with libsoxr) on the same timeline, and each Frame carries exactly the samples
``[O(k), O(k+1))``, ``O(k) = round(k·audio_out_rate/fps)``: the audio that drove frame k, zeros
where silence was filled. Playing ``Frame.audio`` back to back while showing the frames at
``k/fps`` is therefore in sync by construction (audio/video offset 0, up to one sample of
rounding at a silence fill). When frames were skipped (``latest=True``), a Frame's audio
starts where the previous Frame's audio ended, so the concatenation of ``Frame.audio`` over all
Frames is always the pushed signal (a 48 kHz int16 mono input comes back bit for bit).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from engine.audio.input import AudioInput, to_int16

__all__ = ["AudioOut"]


class AudioOut:
    """int16 mono at ``rate`` Hz, fed by :meth:`push` (any input rate/layout) and zeros."""

    def __init__(self, rate: int):
        self.rate = int(rate)
        self._buf = np.zeros(0, dtype=np.int16)
        self._base = 0                               # absolute position of _buf[0]
        self._in: Optional[AudioInput] = None        # the current input stream (→ rate)

    @property
    def total(self) -> int:
        """Absolute position just past the last sample held (everything ever appended)."""
        return self._base + self._buf.size

    def start(self, sample_rate: int, channels: int, dtype: str) -> None:
        """A new input stream (call :meth:`flush` first to keep the old one's tail)."""
        self._in = AudioInput(sample_rate, channels, dtype, out_rate=self.rate)

    def push(self, pcm) -> None:
        """A chunk of the current stream (already validated by the features' AudioInput)."""
        self._append(to_int16(self._in.push(pcm)))

    def flush(self) -> None:
        """End of the current stream: what the resampler holds comes out."""
        if self._in is not None:
            self._append(to_int16(self._in.flush()))

    def discard_pending(self) -> None:
        """Drop what the resampler holds (a fresh stream of the same format)."""
        if self._in is not None:
            self._in = AudioInput(self._in.sample_rate, self._in.channels, self._in.dtype, out_rate=self.rate)

    def pad_to(self, position: int) -> None:
        """Zeros up to ``position`` (silence filled on the features' side)."""
        if position > self.total:
            self._append(np.zeros(position - self.total, dtype=np.int16))

    def cut_to(self, position: int) -> None:
        """Drop everything from ``position`` on (or pad with zeros up to it)."""
        if self.total > position:
            self._buf = self._buf[:max(0, position - self._base)]
        else:
            self.pad_to(position)

    def take(self, lo: int, hi: int) -> np.ndarray:
        """Samples [lo, hi) (a copy), then everything before ``hi`` is released."""
        out = self._buf[max(0, lo - self._base): max(0, hi - self._base)].copy()
        self.release(hi)
        return out

    def release(self, upto: int) -> None:
        """Forget the samples before ``upto`` (handed out or dropped)."""
        if upto > self._base:
            cut = min(upto - self._base, self._buf.size)
            self._buf = self._buf[cut:]
            self._base += cut

    def clear(self) -> None:
        self._buf = np.zeros(0, dtype=np.int16)
        self._in = None

    def _append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._buf = np.concatenate([self._buf, samples]) if self._buf.size else samples.copy()
