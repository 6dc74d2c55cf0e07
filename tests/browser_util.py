"""Helpers of the web-client tests (``tests/web_client/``) that read and wait on a page."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000        # every wait in the browser is bounded by this
MIN_FRAMES = 30


def screenshot(pg, tmp_path: Path, name: str) -> Path:
    out = tmp_path / f"{name}.png"
    pg.screenshot(path=str(out), full_page=True)
    artefacts = os.environ.get("STYLECAST_ARTIFACTS")
    if artefacts:
        Path(artefacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(artefacts) / out.name)
    return out


def status(pg) -> tuple[str, str]:
    el = pg.locator("#status")
    return el.get_attribute("data-state"), el.inner_text()


def wait_state(pg, state: str):
    pg.wait_for_function("s => window.stylecast.state === s", arg=state, timeout=TIMEOUT_MS)


def video_frame(pg) -> np.ndarray:
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


def rest_image(engine, seed: int) -> np.ndarray:
    """What the server shows for ``seed`` before any motion: frame 0 of a fresh session."""
    from engine.session import AvatarSession

    session = AvatarSession(engine, identity=seed)
    try:
        return session.next_frame(fill_silence=True).image.astype(np.float64)
    finally:
        session.close()


def distance(a: np.ndarray, b: np.ndarray, cells: int = 16) -> float:
    """Mean absolute difference of two images pooled to cells x cells (blurs codec and motion detail)."""
    def pool(img):
        h, w = img.shape[0] // cells, img.shape[1] // cells
        return img[:h * cells, :w * cells].reshape(cells, h, cells, w, 3).mean(axis=(1, 3))
    return float(np.abs(pool(a) - pool(b)).mean())


def frames_decoded(pg) -> int:
    return pg.evaluate("() => window.stylecast.stats.framesDecoded || 0")


def wait_more_frames(pg, n: int):
    start = frames_decoded(pg)
    pg.wait_for_function("n => (window.stylecast.stats.framesDecoded || 0) >= n", arg=start + n,
                         timeout=TIMEOUT_MS)
