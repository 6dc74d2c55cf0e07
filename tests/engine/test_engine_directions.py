"""Which directions and driver an engine uses for a generator given no directions (issue 13, point 3),
and the shipped audio LSTM on a generator it was not trained with (point 4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.latent.latent_basis import generator_hash
from engine.latent.defaults import PLACEHOLDER_WARNING, cached_path, faces_available
from engine.latent.direction_set import Direction, DirectionSet
from engine.avatar import DEMO_MOTION
from engine.session import AvatarEngine, AvatarSession, default_directions
from engine.synthesis.checkpoints import load_generator

SR = 16000


@pytest.fixture(autouse=True)
def _setup(monkeypatch, tmp_path):
    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def random_G():
    return load_generator("random")


def test_without_the_faces_extra_the_placeholder_is_loud_and_the_driver_idle(random_G, monkeypatch):
    monkeypatch.setattr("engine.latent.defaults.faces_available", lambda: False)
    said = []
    eng = AvatarEngine(random_G, log=said.append)
    assert eng.directions_kind == "placeholder" and eng.default_driver == "idle"
    assert said.count(PLACEHOLDER_WARNING) == 1 and len(said) == 1
    assert "lips will not follow speech" in said[0] and "stylecast[faces]" in said[0]


def test_a_cached_discovered_set_is_used_and_the_shipped_lstm_drives_it(random_G, monkeypatch):
    """A set in the cache (as `engine.directions discover` leaves it) for a 12-layer, 128-wide random
    network the LSTM never saw: the engine takes it, says so, and the audio-only LSTM moves its
    mouth_open with the voice, in frames that really change."""
    monkeypatch.setattr("engine.latent.defaults.faces_available", lambda: False)
    pca = default_directions(random_G)
    ds = DirectionSet()
    for d in pca:
        ds.add(Direction(d.name, d.vector, d.stdev, layers=d.layers, origin="discovered:test", source="test"),
               checkpoint_hash=pca.checkpoint_hash)
    path = cached_path(generator_hash(random_G), "landmarks")
    path.parent.mkdir(parents=True)
    ds.save(path)
    said = []
    eng = AvatarEngine(random_G, log=said.append)
    assert eng.directions_kind == "cached" and any(str(path) in m for m in said)
    assert PLACEHOLDER_WARNING not in said
    assert eng.default_driver == "lstm+idle:" + str(DEMO_MOTION)
    from engine.demo_world import speech
    if not speech.available():
        pytest.skip("espeak-ng is not installed (speech to drive the LSTM)")
    utt = speech.synthesize("Hello there, this face talks with the shipped voice model.")
    pcm = np.concatenate([utt.samples, np.zeros(int(1.5 * utt.sample_rate), np.int16)])
    s = AvatarSession(eng, fps=25, identity=3)
    for i in range(0, len(pcm), 441):
        s.push_audio(pcm[i:i + 441], utt.sample_rate)
    frames = []
    while (f := s.next_frame()) is not None:
        frames.append(f)
    k = list(s.driver.names).index("mouth_open")
    x = np.array([f.x[k] for f in frames])
    loud = np.array([f.voiced > 0.5 for f in frames])
    quiet = np.array([f.time_s > utt.duration_s + 0.3 for f in frames])
    assert loud.sum() > 20 and quiet.sum() > 20
    assert x[loud].mean() > x[quiet].mean() + 0.5, (x[loud].mean(), x[quiet].mean())
    img = np.stack([f.image.astype(np.float32) for f in frames])
    assert np.abs(img[loud].mean(0) - img[quiet].mean(0)).mean() > 0.5      # the pixels move with it


def test_a_driver_for_names_the_set_lacks_says_what_it_expected(random_G, monkeypatch):
    monkeypatch.setattr("engine.latent.defaults.faces_available", lambda: False)
    pca = default_directions(random_G)
    ds = DirectionSet()
    ds.add(Direction("blink", pca["blink"].vector, 1.0), checkpoint_hash=pca.checkpoint_hash)
    eng = AvatarEngine(random_G, directions=ds)
    with pytest.raises(ValueError, match=r"mouth_open.*blink"):
        AvatarSession(eng, driver="lstm:" + str(DEMO_MOTION))


@pytest.mark.skipif(not faces_available(), reason="the faces extra (dlib-bin, face-recognition-models, "
                    "opencv-python-headless) is not installed")
def test_with_the_faces_extra_a_faceless_generator_fails_discovery_once_then_placeholder(random_G):
    said = []
    eng = AvatarEngine(random_G, log=said.append)
    assert eng.directions_kind == "placeholder" and eng.default_driver == "idle"
    assert any("discovering" in m for m in said)
    assert any("discovery failed" in m and "had no face" in m for m in said)
    assert said[-1] == PLACEHOLDER_WARNING
    again = []
    AvatarEngine(random_G, log=again.append)            # remembered: no second attempt
    assert not any("discovering" in m for m in again) and "found no faces" in again[0]


def test_the_demo_generator_as_a_module_is_still_the_demo(monkeypatch):
    """Loaded first (or by path), the shipped demo generator gets its shipped directions and LSTM:
    no discovery, no placeholder."""
    monkeypatch.setattr("engine.latent.defaults.resolve_directions",
                        lambda *a, **k: pytest.fail("the demo must not be discovered"))
    eng = AvatarEngine(load_generator("demo"))
    assert eng.directions_kind == "shipped" and eng.default_driver == "lstm+idle:" + str(DEMO_MOTION)
    assert "mouth_open" in eng.directions and "blink" in eng.directions
