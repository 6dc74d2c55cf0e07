"""engine.sinks: frames of a real session go to a callback (as uint8, whatever the session's output)
and into an MP4 that decodes back to the same number of frames and audio samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.frames import frame_rgb, images_to_uint8
from engine.session import AvatarEngine, AvatarSession
from engine.sinks import CallbackSink, Mp4Sink

av = pytest.importorskip("av", reason="the MP4 sink needs PyAV (the serve extra)")


@pytest.fixture(scope="module")
def engine(demo_G):
    return AvatarEngine(demo_G)


def _tone(seconds: float, rate: int = 48000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)


def test_images_to_uint8_is_the_one_rounding():
    img = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 2, 3).expand(1, 3, 2, 3)
    out = images_to_uint8(img)
    assert out.shape == (1, 2, 3, 3) and out.dtype == np.uint8
    assert out[0, :, :, 0].reshape(-1).tolist() == [0, 64, 128, 255, 255, 255]
    assert images_to_uint8(img[0]).shape == (2, 3, 3)                     # one CHW image -> HWC


def test_callback_sink_gets_uint8_frames_from_a_tensor_session(engine):
    session = AvatarSession(engine, fps=25, identity=3, output="tensor")
    session.push_audio(_tone(0.3), 48000)
    got = []
    sink = CallbackSink(got.append, rgb=True)
    while (frame := session.next_frame()) is not None:
        assert torch.is_tensor(frame.image)
        sink.write(frame)
        ref = images_to_uint8(frame.image)
        assert np.array_equal(got[-1].image, ref)                         # the same quantisation
    assert sink.frames == len(got) >= 5 and got[0].image.shape == (128, 128, 3)
    # uint8 sessions' frames pass through untouched
    plain = AvatarSession(engine, fps=25, identity=3)
    plain.push_audio(_tone(0.1), 48000)
    f = plain.next_frame(fill_silence=True)
    assert frame_rgb(f) is f.image


def test_mp4_sink_writes_what_decodes(engine, tmp_path):
    session = AvatarSession(engine, fps=25, identity=0, audio_out=True, audio_out_rate=48000)
    pcm = _tone(0.6)
    session.push_audio(pcm, 48000)
    path = tmp_path / "talk.mp4"
    n = samples = 0
    with Mp4Sink(path, size=engine.resolution, fps=25) as sink:
        while (frame := session.next_frame()) is not None:
            sink.write(frame)
            n += 1
            samples += frame.audio.size
    assert 13 <= n <= 15 and samples == n * 48000 // 25                # each frame's own 40 ms
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        decoded = sum(f.samples for f in c.decode(audio=0))
    assert len(frames) == n and frames[0].shape == (128, 128, 3) and frames[0].std() > 10
    assert abs(decoded - samples) <= 2048                                 # AAC pads to whole frames
    with pytest.raises(ValueError, match="even frame size"):
        Mp4Sink(tmp_path / "odd.mp4", size=127, fps=25)
