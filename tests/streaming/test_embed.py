"""streaming.embed.AvatarTracks in a real aiortc peer-connection pair on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from benchmarks.av_sync import connect_pair
from engine.motion.base import MotionDriver
from streaming.embed import AvatarTracks, audio_frame_to_pcm
from streaming.stamps import read_stamp
from rtc_util import PcmTrack, tone

FPS = 25.0
RATE = 48000


class ClickDriver(MotionDriver):
    """Mouth fully open (3 sigma) on frames whose own audio is loud, shut otherwise; no idle
    motion, so the only image change is the marker."""

    lookahead_ms = 40.0

    def __init__(self, names, fps=FPS):
        self.names = list(names)
        self.fps = fps

    def reset(self, anchor=None):
        pass

    def step(self, features):
        x = np.zeros(len(self.names), np.float32)
        if features is not None and features.rms > 0.02:
            x[0] = 3.0
        return x

    def flush(self):
        pass


async def close_pair(bot, viewer, consumers, tracks):
    for c in consumers:
        c.cancel()
    await tracks.aclose()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(bot.close(), 5)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(viewer.close(), 5)


async def wait_for(pred, timeout, what):
    t_end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def burst_signal(click_s: float = 1.0, total_s: float = 2.4) -> np.ndarray:
    pcm = np.zeros(int(total_s * RATE), np.int16)
    burst = tone(0.3, freq=300.0, level=0.5)
    start = int(click_s * RATE)
    pcm[start:start + burst.size] = burst
    return pcm


def audio_onset(got):
    """(media time, arrival) of the first loud sample in the received audio."""
    for arrival, frame in got["audio"]:
        pcm, rate, channels = audio_frame_to_pcm(frame)
        mono = pcm.reshape(-1, channels)[:, 0].astype(np.float32)
        loud = np.flatnonzero(np.abs(mono) > 0.1 * 32768)
        if loud.size:
            return float(frame.pts * frame.time_base) + loud[0] / rate, arrival
    return None, None


def mouth_states(got):
    """[(frame index from the stamp, mouth open?, arrival)] of the received video."""
    out, ref = [], None
    for arrival, frame in got["video"]:
        img = frame.to_ndarray(format="rgb24")
        body = img[:-8].astype(np.float32)
        if ref is None:
            ref = body
        out.append((read_stamp(img), bool(np.abs(body - ref).mean() > 10), arrival))
    return out


@pytest.mark.parametrize("pause_s,stall_s", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.12)])
async def test_bot_audio_and_video_stay_in_sync(engine, pause_s, stall_s):
    """A click 1 s into a TTS-like source (pulled faster than real time; optionally pausing before
    the click, as a TTS thinking) shows up in the received audio and, as an open mouth, in the
    received video at the same media time (< 1 frame apart). ``stall_s``: the event loop (not the
    source) blocks that long at 0.75 s of fed audio, as on a busy machine: that must not put
    silence into the speech (it used to: the click came 20-45 ms late)."""
    pcm = burst_signal()

    async def tts():
        for i in range(0, pcm.size, 960):
            if pause_s and i == int(0.6 * RATE):
                await asyncio.sleep(pause_s)
            yield pcm[i:i + 960], RATE

    tracks = AvatarTracks(engine, tts(), fps=FPS, driver=ClickDriver(engine.directions.names), stamp=True)
    bot, viewer, got, consumers = await connect_pair(tracks)

    async def stall():
        while tracks.stream.fed_seconds() < 0.75:
            await asyncio.sleep(0.005)
        time.sleep(stall_s)          # blocks the loop: no pulling, no sending
    staller = asyncio.ensure_future(stall()) if stall_s else None
    try:
        await wait_for(lambda: len(got["video"]) >= 50 + 25 * pause_s and len(got["audio"]) >= 100 + 50 * pause_s,
                       30, "enough frames")
        t_audio, arr_audio = audio_onset(got)
        states = mouth_states(got)
        assert t_audio is not None
        # the click sits where the source put it (1.0 s, plus the silence that filled the pause),
        # give or take the Opus delay (6.5 ms)
        assert 1.0 <= t_audio < 1.0 + pause_s + 0.015, t_audio
        # in-band, media time: the video frame whose interval holds the audio onset is the first
        # one with the mouth open (frames may be skipped under load, so look at what arrived)
        # (the received onset is late by Opus's 6.5 ms encoder delay: a click that close to a frame
        # boundary may belong to either frame)
        k_first = int(np.floor((t_audio - 0.010) * FPS))
        k_onset = int(np.floor(t_audio * FPS))
        assert not any(is_open for k, is_open, _ in states if k < k_first), states
        after = [is_open for k, is_open, _ in states if k_onset <= k < k_onset + 5]
        assert after and all(after), states
        # wall-clock arrival at this viewer (aiortc holds each video frame until the next one's
        # first packet, one frame interval; its audio jitter buffer is bypassed here)
        arr_video = next(arrival for k, is_open, arrival in states if is_open)
        assert abs(arr_video - arr_audio) < 3 / FPS, arr_video - arr_audio
        # received streams: video frames in order, audio continuous
        stamps = [read_stamp(f.to_ndarray(format="rgb24")) for _, f in got["video"]]
        assert all(b > a for a, b in zip(stamps, stamps[1:]))
        apts = [f.pts for _, f in got["audio"]]
        assert all(b - a == 960 for a, b in zip(apts, apts[1:])), set(np.diff(apts))
        st = tracks.stats()
        assert st["frames"] >= 50 and st["audio_errors"] == 0
        assert st["audio_silenced_chunks"] == 0       # a late worker delays the speech, never cuts it
        # a pulled source is paced, not drained into a buffer: at most the lead ahead of the wall clock
        assert tracks.stream.ahead_seconds() <= tracks.lead_s + 0.1
    finally:
        if staller is not None:
            staller.cancel()
        await close_pair(bot, viewer, consumers, tracks)


async def test_track_source_and_stop(engine):
    """A live aiortc audio track as the source (realtime mode); aclose ends both tracks."""
    from engine.session import AvatarSession

    session = AvatarSession(engine, fps=FPS, audio_out=True)
    tracks = AvatarTracks(session, PcmTrack(tone(1.0, level=0.3)))
    assert tracks.realtime
    bot, viewer, got, consumers = await connect_pair(tracks)
    try:
        await wait_for(lambda: len(got["video"]) >= 25, 30, "25 frames")
        assert tracks.chunks_in > 10
        received = np.concatenate([audio_frame_to_pcm(f)[0].reshape(-1, 2)[:, 0] for _, f in got["audio"]])
        assert np.abs(received.astype(np.float32)).max() > 0.1 * 32768     # the tone came back
    finally:
        await close_pair(bot, viewer, consumers, tracks)
    assert tracks.stream.stopped and session.closed
    with pytest.raises(MediaStreamError):
        await tracks.video.recv()


async def test_iterable_sources_and_bad_chunks(engine):
    stereo = np.stack([tone(0.5), tone(0.5)], axis=1)          # [n, 2] int16
    frame = av.AudioFrame.from_ndarray(tone(0.02).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = RATE, 0, Fraction(1, RATE)
    items = [(stereo[:960], RATE), (stereo[:960].reshape(-1), RATE, 2), frame, "junk",
             (np.zeros(160, np.float32), 8000), (np.zeros(10, np.int16), 1234)]
    tracks = AvatarTracks(engine, items)
    assert not tracks.realtime
    first = await asyncio.wait_for(tracks.video.recv(), 30)
    assert (first.width, first.height) == (128, 128) and first.time_base == Fraction(1, 90000)
    await wait_for(lambda: tracks.source_done.is_set(), 10, "the source to end")
    assert tracks.chunks_in == 5 and tracks.bad_chunks == 1
    await asyncio.wait_for(tracks.video.recv(), 10)    # idles on after the source ended
    await wait_for(lambda: tracks.stats()["audio_errors"] == 1, 10, "the bad rate to be reported")
    await tracks.aclose()


def test_argument_errors(engine):
    from engine.session import AvatarSession

    with pytest.raises(TypeError):
        AvatarTracks("demo", [])
    with pytest.raises(TypeError):
        AvatarTracks(engine, 42)
    video_track = PcmTrack()
    video_track.kind = "video"
    with pytest.raises(ValueError):
        AvatarTracks(engine, video_track)
    silent = AvatarTracks(AvatarSession(engine), [])
    with pytest.raises(AttributeError, match="audio_out=True"):
        silent.audio
    silent.stop()


async def test_identity_and_interrupt_between_frames(engine):
    tracks = AvatarTracks(engine, [(tone(2.0, level=0.3), RATE)], stamp=True)
    try:
        first = await asyncio.wait_for(tracks.video.recv(), 30)
        await tracks.set_identity(7, truncation_psi=0.5)
        with pytest.raises(ValueError):
            await tracks.set_identity(-3)
        await tracks.interrupt()
        frames = [await asyncio.wait_for(tracks.video.recv(), 10) for _ in range(3)]
        a = first.to_ndarray(format="rgb24")[:-8].astype(np.float32)
        b = frames[-1].to_ndarray(format="rgb24")[:-8].astype(np.float32)
        assert np.abs(a - b).mean() > 5                         # another face
        stamps = [read_stamp(f.to_ndarray(format="rgb24")) for f in [first, *frames]]
        assert all(y > x for x, y in zip(stamps, stamps[1:]))
        assert tracks.stats()["frame_errors"] == 0
    finally:
        await tracks.aclose()
