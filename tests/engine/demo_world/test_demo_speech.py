"""engine.demo_world.speech: espeak-ng audio with the synthesizer's own phoneme timing, and the
ground-truth mouth-opening track made from it (not from audio features)."""
from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import pytest

from engine.demo_world import speech

pytestmark = pytest.mark.skipif(not speech.available(), reason="libespeak-ng is not installed (apt-get install espeak-ng)")

TEXT = "Hello world, this is a test of the talking face. Papa bought a big map."


@pytest.fixture(scope="module")
def utt():
    return speech.synthesize(TEXT, voice="en")


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the espeak-ng command is not installed")
def test_audio_is_what_the_espeak_ng_command_says(utt, tmp_path):
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(tmp_path / "cli.wav"), TEXT], check=True, timeout=60)
    with wave.open(str(tmp_path / "cli.wav")) as f:
        cli = np.frombuffer(f.readframes(f.getnframes()), np.int16)
        assert f.getframerate() == utt.sample_rate == 22050
    # the command adds a sentence pause at the end; everything before is the same, sample for sample
    assert 0 <= cli.size - utt.samples.size < 0.5 * utt.sample_rate
    np.testing.assert_array_equal(cli[:utt.samples.size], utt.samples)


def test_an_utterance_does_not_depend_on_what_was_spoken_before(utt):
    # a voice variant changes libespeak-ng's global state for good; synthesis runs in a fresh
    # process each time, so the same arguments give the same samples after any other voice
    for v in ("en+f2", "en-us+m7"):
        speech.synthesize("one two", voice=v, rate_wpm=200, pitch=30)
        again = speech.synthesize(TEXT, voice="en")
        np.testing.assert_array_equal(again.samples, utt.samples)
        assert again.phonemes == utt.phonemes


def test_phoneme_timeline_partitions_the_speech(utt):
    ph = utt.phonemes
    assert len(ph) > 30
    assert all(p.end > p.start for p in ph)
    assert all(a.end == b.start for a, b in zip(ph, ph[1:]))          # contiguous, in order
    assert ph[-1].end == utt.samples.size and ph[0].start < 0.05 * utt.sample_rate
    names = [p.name for p in ph]
    assert names[:4] == ["h", "@", "l", "oU"]                            # "hello"
    assert any(n.startswith("_") for n in names)                        # the pause after "world,"


def test_mouth_track_follows_articulation(utt):
    m = speech.mouth_track(utt, fps=25)
    assert m.dtype == np.float32 and m.shape == (int(np.ceil(utt.duration_s * 25)),)
    assert 0 <= m.min() and m.max() <= 1 and m.max() > 0.8
    sr = utt.sample_rate
    # closed lips in the middle of the long pause phonemes, open in the middle of open vowels
    for p in utt.phonemes:
        mid = int((p.start + p.end) / 2 / sr * 25)
        if p.name == "_:" and p.end - p.start > 0.1 * sr:
            assert m[mid] < 0.15, (p, m[mid])
    # a speech check that the track is not arbitrary: it goes with the loudness per frame
    hop = sr // 25
    rms = np.array([np.sqrt(np.mean(utt.samples[i * hop:(i + 1) * hop].astype(np.float64) ** 2))
                    for i in range(m.size)])
    assert np.corrcoef(m[:rms.size], rms)[0, 1] > 0.4
    assert speech.openness("a") == 1.0 and speech.openness("m") == 0.0 and speech.openness("_:") == 0.0
    assert speech.openness("i:") < speech.openness("E") < speech.openness("A:")


def test_rate_voice_and_errors():
    slow = speech.synthesize("one two three four", rate_wpm=120)
    fast = speech.synthesize("one two three four", rate_wpm=300)
    assert fast.duration_s < 0.7 * slow.duration_s
    f = speech.synthesize("one two three four", voice="en+f2", rate_wpm=120)    # same words and rate, other timbre
    n = min(f.samples.size, slow.samples.size)
    assert not np.array_equal(f.samples[:n], slow.samples[:n])
    assert [p.name for p in f.phonemes] == [p.name for p in slow.phonemes]
    with pytest.raises(ValueError, match="non-empty"):
        speech.synthesize("   ")
    with pytest.raises(ValueError, match="rate_wpm"):
        speech.synthesize("hi", rate_wpm=20)
    with pytest.raises(speech.SpeechError, match="no voice"):
        speech.synthesize("hi", voice="klingon-xx")
    assert "en+f2" in speech.voices()
