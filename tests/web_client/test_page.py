"""The web client in a real browser against the real server on 127.0.0.1.

Chromium (the Debian package at /usr/bin/chromium, driven by Playwright) gets a fake microphone that
plays a speech wav, opens the page the server serves, presses Start and must receive decoded video
of the server's resolution; identity controls must reach the server over the "control" data channel
and come back acknowledged; a full server (HTTP 503), an unreachable server, a refused microphone
and a lost connection must each show a readable message in #status. Screenshots go to the test's
tmp dir and, when STYLECAST_ARTIFACTS is set, to that folder too.
"""
from __future__ import annotations

import time

import pytest
from browser_util import (
    MIN_FRAMES,
    TIMEOUT_MS,
    distance,
    frames_decoded,
    rest_image,
    screenshot,
    status,
    video_frame,
    wait_more_frames,
    wait_state,
)

from streaming.server import STATE_KEY

# ---------------------------------------------------------------- tests


def test_live_video_identity_and_connection_lost(engine, start_server, open_page, tmp_path):
    server = start_server(max_sessions=2)
    page = open_page(server.url)
    health = page.request.get(server.url + "health").json()
    resolution = int(health["resolution"])

    assert status(page)[0] == "idle"
    page.click("#start")
    page.wait_for_function("n => (window.stylecast.stats.framesDecoded || 0) >= n", arg=MIN_FRAMES,
                           timeout=TIMEOUT_MS)
    state, text = status(page)
    assert state == "live", text
    assert page.evaluate("() => window.stylecast.error") is None
    assert page.locator("#notice").is_hidden()
    size = page.evaluate("() => [document.getElementById('video').videoWidth, "
                         "document.getElementById('video').videoHeight]")
    assert size == [resolution, resolution]

    # The stats overlay is filled from getStats() and the server's stats message: resolution, fps,
    # RTT, the latency estimate (every part known once the server has reported), frames.
    page.wait_for_function("() => window.stylecast.stats.latencyComplete === true", timeout=TIMEOUT_MS)
    stats = page.evaluate("() => window.stylecast.stats")
    assert (stats["width"], stats["height"]) == (resolution, resolution)
    assert stats["fps"] > 0
    assert stats["rttMs"] >= 0
    assert stats["latencyMs"] > 0 and stats["latencyParts"]["server"] > 0
    assert stats["framesDecoded"] >= MIN_FRAMES
    assert page.locator("#stat-resolution").inner_text() == f"{resolution}×{resolution}"
    screenshot(page, tmp_path, "browser_live")

    # The fake microphone's speech reaches the server's session (not just silence filled in).
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while server.mic_seconds() < 1.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.mic_seconds() >= 1.0

    # A new seed typed into the UI goes over the control channel; the server acknowledges it and
    # the video shows that face: nearer the new seed's rest image than the old seed's (and the
    # other way round before the change; motion moves the picture less than a new face does).
    old_face, new_face = rest_image(engine, 0), rest_image(engine, 1234)
    before = video_frame(page)
    assert distance(before, old_face) < distance(before, new_face)
    page.fill("#seed", "1234")
    page.press("#seed", "Tab")
    page.wait_for_function("() => window.stylecast.identity && window.stylecast.identity.seed === 1234",
                           timeout=TIMEOUT_MS)
    assert "1234" in page.locator("#identity-ack").inner_text()
    # Frames already encoded or in the browser's jitter buffer still show the old face, and on a
    # busy machine that can be many of them: look again every few frames, within the time bound.
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    start_frames = frames_decoded(page)
    while True:
        wait_more_frames(page, 5)
        after = video_frame(page)
        to_new, to_old = distance(after, new_face), distance(after, old_face)
        if to_new < to_old or time.monotonic() > deadline:
            break
    assert to_new < to_old, (f"still the old face {frames_decoded(page) - start_frames} frames after the "
                             f"acknowledgement: distance {to_new:.1f} to the new face, {to_old:.1f} to the old")

    # The truncation slider sends the same message with the new psi.
    page.fill("#truncation", "0.5")
    page.wait_for_function("() => window.stylecast.identity.truncation === 0.5", timeout=TIMEOUT_MS)
    assert page.evaluate("() => window.stylecast.identity.seed") == 1234

    # "Random": the server picks the seed and the seed box shows it.
    acks = page.evaluate("() => window.stylecast.messages.filter(m => m.type === 'identity').length")
    page.click("#random")
    page.wait_for_function(
        "n => window.stylecast.messages.filter(m => m.type === 'identity').length > n", arg=acks,
        timeout=TIMEOUT_MS)
    seed = page.evaluate("() => window.stylecast.identity.seed")
    assert page.input_value("#seed") == str(seed)
    assert status(page)[0] == "live"
    screenshot(page, tmp_path, "browser_identity")

    # "Interrupt" reaches the server, which confirms it; the stream goes on.
    page.click("#interrupt")
    page.wait_for_function("() => window.stylecast.messages.some(m => m.type === 'interrupt')",
                           timeout=TIMEOUT_MS)
    wait_more_frames(page, 5)
    assert status(page)[0] == "live"

    # The server goes away: the page says the connection is lost.
    server.stop()
    wait_state(page, "error")
    state, text = status(page)
    assert "connection lost" in text.lower(), text
    screenshot(page, tmp_path, "browser_connection_lost")


def test_server_full_shows_the_servers_message(start_server, open_page, tmp_path):
    server = start_server(max_sessions=1)
    first = open_page(server.url)
    first.click("#start")
    wait_state(first, "live")

    page = open_page(server.url)
    page.click("#start")
    wait_state(page, "error")
    state, text = status(page)
    assert "server full (1 sessions)" in text and "try again" in text.lower(), text
    assert page.locator("#start").is_enabled()
    assert status(first)[0] == "live"
    screenshot(page, tmp_path, "browser_server_full")

    # Once the first person stops, the second one gets in.
    first.click("#stop")
    assert status(first)[0] == "idle"
    page.wait_for_function("() => fetch('health').then(r => r.json()).then(h => h.sessions === 0)",
                           polling=200, timeout=TIMEOUT_MS)
    page.click("#start")
    wait_state(page, "live")


def test_unreachable_server_and_refused_microphone(start_server, open_page, tmp_path):
    server = start_server(max_sessions=1)
    page = open_page(server.url)

    # The offer cannot reach the server (network error).
    page.route("**/offer", lambda route: route.abort("connectionrefused"))
    page.click("#start")
    wait_state(page, "error")
    assert "cannot be reached" in status(page)[1], status(page)
    page.unroute("**/offer")

    # The person says no to the microphone.
    page.evaluate("""() => {
        navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
    }""")
    page.click("#start")
    page.wait_for_function("() => window.stylecast.state === 'error' && "
                           "/permission/i.test(window.stylecast.error)", timeout=TIMEOUT_MS)
    assert "microphone permission was denied" in status(page)[1].lower()
    screenshot(page, tmp_path, "browser_mic_denied")

    # No microphone at all.
    page.evaluate("""() => {
        navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException("Requested device not found", "NotFoundError"));
    }""")
    page.click("#start")
    page.wait_for_function("() => /no microphone/i.test(window.stylecast.error || '')", timeout=TIMEOUT_MS)


def test_a_photo_chosen_on_the_page_becomes_the_face(engine, start_server, open_page, tmp_path):
    """The page's "Your photo" control: the file goes to POST /photo with the session id, the
    progress shows, and the video shows the inverted face (scikit-image's astronaut)."""
    skdata = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
    pytest.importorskip("dlib", reason="needs the faces extra to find the face")
    import torch
    from PIL import Image

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(photo, quality=92)
    (tmp_path / "notes.jpg").write_text("not an image")
    server = start_server(max_sessions=1, photo_steps=20, photo_wplus_steps=10)
    page = open_page(server.url)
    assert page.locator("#photo").is_disabled()              # until a session runs
    page.click("#start")
    wait_state(page, "live")
    page.set_input_files("#photo", str(tmp_path / "notes.jpg"))
    page.wait_for_function("() => /Not used: .*not an image/.test(document.getElementById('photo-status')"
                           ".textContent)", timeout=TIMEOUT_MS)
    before = video_frame(page)
    page.set_input_files("#photo", str(photo))
    page.wait_for_function("() => window.stylecast.identity && window.stylecast.identity.photo === true",
                           timeout=TIMEOUT_MS * 2)
    assert "Server shows your photo" in page.locator("#photo-status").inner_text()
    assert page.evaluate("() => window.stylecast.messages.some(m => m.type === 'photo')")
    from engine.inversion.identity_file import read_identity

    files = server.app[STATE_KEY].photos.files()
    assert len(files) == 1
    ws = read_identity(files[0], generator_hash=engine.checkpoint_hash).ws
    with torch.no_grad():
        recon = engine.to_uint8(engine.synthesize(torch.from_numpy(ws)))[0]
    deadline = time.monotonic() + TIMEOUT_MS / 1000      # frames in flight still show the old face
    while True:
        wait_more_frames(page, 5)
        after = video_frame(page)
        if distance(after, recon) < 0.5 * distance(before, recon) or time.monotonic() > deadline:
            break
    assert distance(after, recon) < 0.5 * distance(before, recon), (distance(after, recon),
                                                                       distance(before, recon))
    assert status(page)[0] == "live"
    screenshot(page, tmp_path, "browser_photo")
