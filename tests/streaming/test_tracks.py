"""streaming.tracks.AvatarAudioTrack against a producer whose frames come late (a stalled worker)."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from streaming.slots import AudioOutBuffer, LatestSlot
from streaming.tracks import AvatarAudioTrack

RATE = 48000
CHUNK = 960


class LateProducer:
    """The :class:`streaming.tracks.Producer` the audio track reads: t0 is now, nothing written yet."""

    fps = 25.0

    def __init__(self):
        self.video_slot = LatestSlot()
        self.audio_out = AudioOutBuffer(RATE)
        self.t0 = time.monotonic()
        self.stopped = False

    def ensure_started(self):
        pass

    def deadline(self, seconds):
        return self.t0 + seconds

    def note_sent(self, index):
        pass


@pytest.mark.parametrize("max_wait_s", [None, 0.05])
async def test_late_audio_waits_or_turns_to_silence(max_wait_s):
    """The frame holding chunks 0-1 is published 300 ms after chunk 0's deadline (past the live
    default of 250 ms). A pulled source's track (``max_wait_s=None``) waits and sends the real
    samples, late; a live one gives
    up after ``max_wait_s``, sends silence and counts it; the late samples of that chunk are dropped
    and the next chunk is the real audio again."""
    producer = LateProducer()
    speech = np.arange(1, 2 * CHUNK + 1, dtype=np.int16)
    loop = asyncio.get_running_loop()
    writer = loop.call_later(0.3, producer.audio_out.write, 0, speech)
    track = AvatarAudioTrack(producer, max_wait_s=max_wait_s)
    first = await asyncio.wait_for(track.recv(), 5)
    waited = time.monotonic() - producer.t0
    if max_wait_s is not None:      # given up before the write: publish now, then read on
        writer.cancel()
        producer.audio_out.write(0, speech)
    second = await asyncio.wait_for(track.recv(), 5)
    assert (first.pts, second.pts) == (0, CHUNK) and first.sample_rate == RATE
    assert np.array_equal(second.to_ndarray().reshape(-1), speech[CHUNK:])
    if max_wait_s is None:
        assert waited >= 0.29, waited
        assert np.array_equal(first.to_ndarray().reshape(-1), speech[:CHUNK]) and track.silenced_chunks == 0
    else:
        assert waited < 0.25, waited
        assert not first.to_ndarray().any() and track.silenced_chunks == 1
    track.stop()
