"""Fixtures of the web-client tests: the real server on 127.0.0.1 run by its own event loop in a
thread (so the synchronous Playwright API can drive the browser here), headless Chromium (the
Debian package at /usr/bin/chromium, driven by Playwright) with a fake microphone playing speech,
and pages whose errors fail the test. Without Chromium or Playwright every test here is skipped,
with the reason. Helpers that read a page are in ``tests/browser_util.py``.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
from browser_util import CHROMIUM, TIMEOUT_MS
from rtc_util import running_server

from engine.session import AvatarEngine

try:
    from streaming.ice import loopback_candidates
    from streaming.server import STATE_KEY, ServerConfig
except ImportError:        # no serve extra
    loopback_candidates = contextlib.nullcontext
    STATE_KEY = ServerConfig = None


@pytest.fixture(autouse=True)
def loopback():
    with loopback_candidates():
        yield


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
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package 'chromium'); browser tests skipped")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (dev extra)")
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
