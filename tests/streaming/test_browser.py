"""The web client in a real browser against the real server on 127.0.0.1.

Chromium (the Debian package at /usr/bin/chromium, driven by Playwright) gets a fake microphone that
plays a speech wav, opens the page the server serves, presses Start and must receive decoded video
of the server's resolution; identity controls must reach the server over the "control" data channel
and come back acknowledged; a full server (HTTP 503), an unreachable server, a refused microphone
and a lost connection must each show a readable message in #status. Screenshots go to the test's
tmp dir and, when STYLECAST_ARTIFACTS is set, to that folder too.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'); browser tests skipped",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")

from engine.session import AvatarEngine, AvatarSession  # noqa: E402  (after the skips)
from streaming.server import STATE_KEY, ServerConfig  # noqa: E402
from rtc_util import running_server  # noqa: E402

TIMEOUT_MS = 60_000        # every wait in the browser is bounded by this
MIN_FRAMES = 30


# ---------------------------------------------------------------- server in a thread


class ServerThread:
    """The real server (tests.rtc_util.running_server: create_app on 127.0.0.1, a free port) run by
    its own event loop in a thread, so the synchronous Playwright API can drive the browser here.

    With ``host="127.0.0.1"`` the server itself offers only loopback ICE candidates."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),),
                                       name="stylecast-test-server", daemon=True)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.app = None
        self.url = ""

    async def _serve(self):
        self._stopping = asyncio.Event()
        try:
            async with running_server(self.config) as (url, app):
                self.url, self.app = url + "/", app
                self.ready.set()
                await self._stopping.wait()
        except BaseException as exc:  # reported by start()
            self.error = exc
        finally:
            self.ready.set()

    def mic_seconds(self) -> float:
        """Seconds of received (not silence-filled) audio the server's sessions have consumed."""
        clients = list(self.app[STATE_KEY].clients.values())
        return sum(c.stream.session.clock / 16000 - c.stream.silence_s for c in clients)

    def start(self) -> "ServerThread":
        self.thread.start()
        if not self.ready.wait(120):
            raise TimeoutError("test server did not start within 120 s")
        if self.error is not None:
            raise self.error
        return self

    def stop(self):
        """Shut the app down (closes its peer connections) and end the loop thread."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stopping.set)
            self.thread.join(timeout=60)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


@pytest.fixture(scope="module")
def engine():
    """One demo-generator engine shared by every server of this module (built once)."""
    return AvatarEngine("demo", device="cpu")


@pytest.fixture
def start_server(engine):
    servers = []

    def start(**config):
        config.setdefault("admission", False)     # the browser shares the 2 cores; admission has its own test
        server = ServerThread(ServerConfig(host="127.0.0.1", port=0, engine=engine, **config)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------- browser


def _speech_wav(path: Path) -> Path:
    """A few seconds of speech from espeak-ng, or (without it) voiced bursts synthesised here."""
    text = "Hello, this is a StyleCast browser test. The avatar should move its mouth while I speak."
    espeak = shutil.which("espeak-ng")
    if espeak:
        try:
            subprocess.run([espeak, "-w", str(path), text], check=True, timeout=60,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            return path
        except (subprocess.SubprocessError, OSError):
            pass
    rate = 16000
    t = np.arange(4 * rate) / rate
    voice = sum(np.sin(2 * np.pi * 120.0 * h * t) / h for h in range(1, 20))
    gate = (np.sin(2 * np.pi * 1.5 * t) > 0).astype(np.float64)  # 1/3 s on, 1/3 s off
    pcm = (0.3 * 32767 * voice * gate / np.abs(voice).max()).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    wav = _speech_wav(tmp_path_factory.mktemp("audio") / "speech.wav")
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
    ]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args, timeout=TIMEOUT_MS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """open_page(url) -> a fresh page (own browser context) showing url; page errors fail the test."""
    contexts, console = [], []

    def open_page(url):
        context = browser.new_context(viewport={"width": 800, "height": 1000})
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(TIMEOUT_MS)
        tag = f"page{len(contexts)}"
        pg.on("console", lambda msg: console.append(f"{tag} {msg.type}: {msg.text}"))
        pg.on("pageerror", lambda exc: console.append(f"{tag} pageerror: {exc}"))
        pg.goto(url)
        return pg

    yield open_page
    for context in contexts:
        context.close()
    (tmp_path / "console.log").write_text("\n".join(console))
    assert not [line for line in console if " pageerror: " in line], console


def _screenshot(pg, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.png"
    pg.screenshot(path=str(out), full_page=True)
    artefacts = os.environ.get("STYLECAST_ARTIFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(artefacts) / out.name)
    return out


def _status(pg) -> tuple[str, str]:
    el = pg.locator("#status")
    return el.get_attribute("data-state"), el.inner_text()


def _wait_state(pg, state: str):
    pg.wait_for_function("s => window.stylecast.state === s", arg=state, timeout=TIMEOUT_MS)


def _video_frame(pg) -> np.ndarray:
    """The frame the <video> shows now, [H, W, 3] float RGB (drawn to a canvas at its own size)."""
    width, height, data = pg.evaluate("""() => {
        const v = document.getElementById("video");
        const c = document.createElement("canvas");
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext("2d");
        g.drawImage(v, 0, 0);
        return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)];
    }""")
    return np.asarray(data, np.float64).reshape(height, width, 4)[..., :3]


def _rest_image(engine, seed: int) -> np.ndarray:
    """What the server shows for ``seed`` before any motion: frame 0 of a fresh session."""
    session = AvatarSession(engine, identity=seed)
    try:
        return session.next_frame(fill_silence=True).image.astype(np.float64)
    finally:
        session.close()


def _distance(a: np.ndarray, b: np.ndarray, cells: int = 16) -> float:
    """Mean absolute difference of two images pooled to cells x cells (blurs codec and motion detail)."""
    def pool(img):
        h, w = img.shape[0] // cells, img.shape[1] // cells
        return img[:h * cells, :w * cells].reshape(cells, h, cells, w, 3).mean(axis=(1, 3))
    return float(np.abs(pool(a) - pool(b)).mean())


def _frames_decoded(pg) -> int:
    return pg.evaluate("() => window.stylecast.stats.framesDecoded || 0")


def _wait_more_frames(pg, n: int):
    start = _frames_decoded(pg)
    pg.wait_for_function("n => (window.stylecast.stats.framesDecoded || 0) >= n", arg=start + n,
                         timeout=TIMEOUT_MS)


# ---------------------------------------------------------------- tests


def test_live_video_identity_and_connection_lost(engine, start_server, open_page, tmp_path):
    server = start_server(max_sessions=2)
    page = open_page(server.url)
    health = page.request.get(server.url + "health").json()
    resolution = int(health["resolution"])

    assert _status(page)[0] == "idle"
    page.click("#start")
    page.wait_for_function("n => (window.stylecast.stats.framesDecoded || 0) >= n", arg=MIN_FRAMES,
                           timeout=TIMEOUT_MS)
    state, text = _status(page)
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
    _screenshot(page, tmp_path, "browser_live")

    # The fake microphone's speech reaches the server's session (not just silence filled in).
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while server.mic_seconds() < 1.0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.mic_seconds() >= 1.0

    # A new seed typed into the UI goes over the control channel; the server acknowledges it and
    # the video shows that face: nearer the new seed's rest image than the old seed's (and the
    # other way round before the change; motion moves the picture less than a new face does).
    old_face, new_face = _rest_image(engine, 0), _rest_image(engine, 1234)
    before = _video_frame(page)
    assert _distance(before, old_face) < _distance(before, new_face)
    page.fill("#seed", "1234")
    page.press("#seed", "Tab")
    page.wait_for_function("() => window.stylecast.identity && window.stylecast.identity.seed === 1234",
                           timeout=TIMEOUT_MS)
    assert "1234" in page.locator("#identity-ack").inner_text()
    # Frames already encoded or in the browser's jitter buffer still show the old face, and on a
    # busy machine that can be many of them: look again every few frames, within the time bound.
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    start_frames = _frames_decoded(page)
    while True:
        _wait_more_frames(page, 5)
        after = _video_frame(page)
        to_new, to_old = _distance(after, new_face), _distance(after, old_face)
        if to_new < to_old or time.monotonic() > deadline:
            break
    assert to_new < to_old, (f"still the old face {_frames_decoded(page) - start_frames} frames after the "
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
    assert _status(page)[0] == "live"
    _screenshot(page, tmp_path, "browser_identity")

    # "Interrupt" reaches the server, which confirms it; the stream goes on.
    page.click("#interrupt")
    page.wait_for_function("() => window.stylecast.messages.some(m => m.type === 'interrupt')",
                           timeout=TIMEOUT_MS)
    _wait_more_frames(page, 5)
    assert _status(page)[0] == "live"

    # The server goes away: the page says the connection is lost.
    server.stop()
    _wait_state(page, "error")
    state, text = _status(page)
    assert "connection lost" in text.lower(), text
    _screenshot(page, tmp_path, "browser_connection_lost")


def test_server_full_shows_the_servers_message(start_server, open_page, tmp_path):
    server = start_server(max_sessions=1)
    first = open_page(server.url)
    first.click("#start")
    _wait_state(first, "live")

    page = open_page(server.url)
    page.click("#start")
    _wait_state(page, "error")
    state, text = _status(page)
    assert "server full (1 sessions)" in text and "try again" in text.lower(), text
    assert page.locator("#start").is_enabled()
    assert _status(first)[0] == "live"
    _screenshot(page, tmp_path, "browser_server_full")

    # Once the first person stops, the second one gets in.
    first.click("#stop")
    assert _status(first)[0] == "idle"
    page.wait_for_function("() => fetch('health').then(r => r.json()).then(h => h.sessions === 0)",
                           polling=200, timeout=TIMEOUT_MS)
    page.click("#start")
    _wait_state(page, "live")


def test_unreachable_server_and_refused_microphone(start_server, open_page, tmp_path):
    server = start_server(max_sessions=1)
    page = open_page(server.url)

    # The offer cannot reach the server (network error).
    page.route("**/offer", lambda route: route.abort("connectionrefused"))
    page.click("#start")
    _wait_state(page, "error")
    assert "cannot be reached" in _status(page)[1], _status(page)
    page.unroute("**/offer")

    # The person says no to the microphone.
    page.evaluate("""() => {
        navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
    }""")
    page.click("#start")
    page.wait_for_function("() => window.stylecast.state === 'error' && "
                           "/permission/i.test(window.stylecast.error)", timeout=TIMEOUT_MS)
    assert "microphone permission was denied" in _status(page)[1].lower()
    _screenshot(page, tmp_path, "browser_mic_denied")

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
    _wait_state(page, "live")
    page.set_input_files("#photo", str(tmp_path / "notes.jpg"))
    page.wait_for_function("() => /Not used: .*not an image/.test(document.getElementById('photo-status')"
                           ".textContent)", timeout=TIMEOUT_MS)
    before = _video_frame(page)
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
        _wait_more_frames(page, 5)
        after = _video_frame(page)
        if _distance(after, recon) < 0.5 * _distance(before, recon) or time.monotonic() > deadline:
            break
    assert _distance(after, recon) < 0.5 * _distance(before, recon), (_distance(after, recon),
                                                                       _distance(before, recon))
    assert _status(page)[0] == "live"
    _screenshot(page, tmp_path, "browser_photo")
