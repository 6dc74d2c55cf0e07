"""The stream's clocks: RTP time bases and packet sizes.

Inside, time is counted in samples of the session's 16 kHz input clock and frame indices
(``engine.session``); here are the units the tracks put on the wire: video pts in 1/90000 s
(``pts = round(k * 90000 / fps)``), audio pts in samples at the output rate, 20 ms per packet.
Wall time (``time.monotonic``) appears only at the edges: the tracks' release deadlines.
"""
from __future__ import annotations

from fractions import Fraction

__all__ = ["VIDEO_CLOCK_RATE", "VIDEO_TIME_BASE", "AUDIO_PTIME", "PCM_RATE"]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_PTIME = 0.020           # one Opus packet per 20 ms audio frame
PCM_RATE = 48000
