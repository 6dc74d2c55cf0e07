"""The Pipecat video service (``streaming.integrations.pipecat``) in pipecat's own test pipeline
(``pipecat.tests.utils.run_test``), on the demo face: each image is followed by exactly the audio
that drove it, idle frames flow between turns, an interruption silences the voice and rests the
mouth, the turn's stop comes after its audio, any input rate works and the metrics are sent."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the pipecat extra is not installed (pip install 'stylecast[pipecat]')")

from pipecat.frames.frames import (InterruptionFrame, MetricsFrame, OutputImageRawFrame,  # noqa: E402
                                   TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame)
from pipecat.metrics.metrics import TTFBMetricsData  # noqa: E402
from pipecat.pipeline.task import PipelineParams  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection  # noqa: E402
from pipecat.tests.utils import SleepFrame, run_test  # noqa: E402

from streaming.integrations.pipecat import AvatarMetricsData, StyleCastVideoService  # noqa: E402

OUT_RATE = 24000


@pytest.fixture(scope="module")
def engine():
    import torch

    from engine.session import AvatarEngine
    torch.set_num_threads(1)
    return AvatarEngine("demo")


@pytest.fixture(scope="module")
def mouth():
    """The demo probes' mouth reading of the images (0 closed .. 1 open)."""
    from engine.demo_world.probe_measure import ProbeMeasure
    m = ProbeMeasure()
    return lambda images: m(np.stack(images))["mouth_open"]




def chunks(pcm: np.ndarray, rate: int, channels: int = 1, ms: int = 20) -> list:
    step = rate * ms // 1000 * channels
    return [TTSAudioRawFrame(audio=pcm[i:i + step].tobytes(), sample_rate=rate, num_channels=channels)
            for i in range(0, len(pcm), step)]


async def run(svc, frames) -> list[tuple[float, object]]:
    """(time, frame) of what the service pushed downstream, in the order it pushed them (a
    processor after it takes system frames such as InterruptionFrame ahead of its queue)."""
    seen: list[tuple[float, object]] = []
    push = svc.push_frame

    async def noted(frame, direction=FrameDirection.DOWNSTREAM):
        if direction == FrameDirection.DOWNSTREAM:
            seen.append((time.perf_counter(), frame))
        await push(frame, direction)

    svc.push_frame = noted
    await run_test(svc, frames_to_send=frames, start_timeout=60,
                   pipeline_params=PipelineParams(enable_metrics=True, audio_out_sample_rate=OUT_RATE))
    return seen


def image(frame) -> np.ndarray:
    w, h = frame.size
    return np.frombuffer(frame.image, np.uint8).reshape(h, w, 3)


def speech() -> tuple[np.ndarray, int]:
    from engine.demo_world import speech as espeak
    if not espeak.available():
        pytest.skip("espeak-ng is not installed (the test speaks a real sentence)")
    utt = espeak.synthesize("Hello there, I am the avatar and I am talking to you about the weather today.",
                            voice="en", rate_wpm=160)
    return utt.samples, utt.sample_rate


async def test_each_image_is_followed_by_the_audio_that_drove_it(engine):
    """At the output rate the audio passes sample for sample; every audio frame comes right after
    its image (sync_with_audio); idle images before and after the turn carry no audio; the stop
    follows the turn's last audio; TTFB and the turn's own figures are sent."""
    rng = np.random.default_rng(3)
    pcm = (rng.standard_normal(int(1.2 * OUT_RATE)) * 4000).astype(np.int16)
    svc = StyleCastVideoService(engine=engine, fps=25)
    seen = await run(svc, [SleepFrame(sleep=0.6), TTSStartedFrame(), *chunks(pcm, OUT_RATE),
                           TTSStoppedFrame(), SleepFrame(sleep=2.2)])   # the turn runs 1.2 s after the stop is sent
    frames = [f for _, f in seen]
    kinds = [type(f) for f in frames]
    audio_at = [i for i, f in enumerate(frames) if isinstance(f, TTSAudioRawFrame)]
    assert len(audio_at) in (30, 31, 32)                         # 1.2 s at 25 fps, and the lookahead's tail
    for i in audio_at:
        assert isinstance(frames[i - 1], OutputImageRawFrame) and frames[i - 1].sync_with_audio
        assert frames[i].sample_rate == OUT_RATE and len(frames[i].audio) == 2 * OUT_RATE // 25
    out = np.frombuffer(b"".join(frames[i].audio for i in audio_at), np.int16)
    # the idle frames' silence ran up to the last one's lookahead (40 ms): the voice starts after it
    lead = int(np.flatnonzero(out)[0])
    assert lead <= 0.04 * OUT_RATE
    np.testing.assert_array_equal(out[lead:lead + len(pcm)], pcm)
    assert not out[:lead].any() and not out[lead + len(pcm):].any()
    start, stop = kinds.index(TTSStartedFrame), kinds.index(TTSStoppedFrame)
    assert start < audio_at[0] and stop > audio_at[-1]
    images = [i for i, f in enumerate(frames) if isinstance(f, OutputImageRawFrame)]
    before, after = [i for i in images if i < start], [i for i in images if i > stop]
    assert len(before) >= 8 and len(after) >= 12                   # idle at 25 fps on the wall clock
    assert image(frames[images[0]]).shape == (128, 128, 3)
    metrics = [d for f in frames if isinstance(f, MetricsFrame) for d in f.data]
    ttfb = [d.value for d in metrics if isinstance(d, TTFBMetricsData) and d.value > 0]
    turn = [d for d in metrics if isinstance(d, AvatarMetricsData)]
    assert len(ttfb) == 1 and ttfb[0] < 1.0, metrics
    assert len(turn) == 1 and turn[0].frames == len(audio_at) and turn[0].dropped_audio_s == 0
    assert 0 < turn[0].synthesis_p50_ms <= turn[0].synthesis_p95_ms


async def test_speech_opens_the_mouth_and_an_interruption_silences_and_rests_it(engine, mouth):
    """Real speech (espeak-ng, 22.05 kHz) sent all at once, interrupted 1 s in: no audio leaves
    after the InterruptionFrame, the mouth is at rest within 3 frames, the turn's stop still
    comes, and the audio sent before it covers the time it ran (not the whole utterance)."""
    pcm, rate = speech()
    assert len(pcm) / rate > 3.0
    svc = StyleCastVideoService(engine=engine, fps=25)
    seen = await run(svc, [SleepFrame(sleep=0.6), TTSStartedFrame(), *chunks(pcm, rate), SleepFrame(sleep=1.0),
                           InterruptionFrame(), SleepFrame(sleep=1.0), TTSStoppedFrame(), SleepFrame(sleep=0.3)])
    frames = [f for _, f in seen]
    kinds = [type(f) for f in frames]
    start, cut = kinds.index(TTSStartedFrame), kinds.index(InterruptionFrame)
    assert TTSStoppedFrame in kinds[cut:]
    assert not any(isinstance(f, TTSAudioRawFrame) for f in frames[cut:])
    talk = [i for i in range(start, cut) if kinds[i] is TTSAudioRawFrame]
    sent_s = len(talk) / 25
    assert 0.6 < sent_s < 1.0 + 0.2 + 0.3, sent_s                  # ~1 s ran, plus at most the lead
    idle = [image(f) for f in frames[:start] if isinstance(f, OutputImageRawFrame)]
    talking = [image(frames[i - 1]) for i in talk]
    after = [image(f) for f in frames[cut:] if isinstance(f, OutputImageRawFrame)]
    rest, spoken, later = mouth(idle), mouth(talking), mouth(after[3:15])     # 120..600 ms after the cut
    assert spoken.max() > rest.max() + 0.3 and spoken.mean() > rest.mean() + 0.1, (rest, spoken)
    assert later.max() < rest.max() + 0.1, (rest, later)
    assert len(after) >= 20


@pytest.mark.parametrize("rate,channels", [(16000, 1), (48000, 2)])
async def test_any_tts_rate_and_layout_keeps_its_length(engine, rate, channels):
    t = np.arange(int(0.8 * rate)) / rate
    mono = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    pcm = np.repeat(mono, channels) if channels > 1 else mono
    svc = StyleCastVideoService(engine=engine, fps=25)
    seen = await run(svc, [TTSStartedFrame(), *chunks(pcm, rate, channels), TTSStoppedFrame(), SleepFrame(sleep=0.4)])
    out = np.frombuffer(b"".join(f.audio for _, f in seen if isinstance(f, TTSAudioRawFrame)), np.int16)
    assert 0.8 * OUT_RATE <= len(out) <= 0.8 * OUT_RATE + 2 * OUT_RATE // 25
    level = np.sqrt(np.mean(out[OUT_RATE // 10: int(0.7 * OUT_RATE)].astype(np.float64) ** 2))
    assert level == pytest.approx(8000 / np.sqrt(2), rel=0.05)       # the same tone, resampled


async def test_a_full_buffer_drops_the_excess_and_says_so_once(engine, caplog):
    pcm = np.full(2 * OUT_RATE, 1000, np.int16)
    svc = StyleCastVideoService(engine=engine, fps=25, max_buffer_s=0.5)
    with caplog.at_level(logging.WARNING, logger="stylecast.integrations"):
        seen = await run(svc, [TTSStartedFrame(), *chunks(pcm, OUT_RATE), TTSStoppedFrame(), SleepFrame(sleep=0.3)])
    said = [r for r in caplog.records if "TTS audio waiting" in r.getMessage()]
    assert len(said) == 1
    turn = [d for _, f in seen if isinstance(f, MetricsFrame) for d in f.data if isinstance(d, AvatarMetricsData)]
    sent = sum(len(f.audio) // 2 for _, f in seen if isinstance(f, TTSAudioRawFrame)) / OUT_RATE
    assert turn and turn[0].dropped_audio_s == pytest.approx(2.0 - sent, abs=0.1)
    assert 0.4 < sent < 1.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="fps"):
        StyleCastVideoService(fps=0)
    with pytest.raises(ValueError, match="lead_s"):
        StyleCastVideoService(lead_s=-1)
