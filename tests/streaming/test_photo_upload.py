"""POST /photo for real: a server on 127.0.0.1 with the demo generator, an aiortc client decoding
its video, a real photo (scikit-image's astronaut, from the installed package) uploaded with the
session id: progress over the control channel, then the session's video shows the inverted face.
Bad uploads get their 4xx at once and change nothing; one inversion runs at a time (409 busy);
an inversion stops when its session goes or it runs out of time."""
from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import numpy as np
import pytest

from streaming.server import STATE_KEY, ServerConfig
from rtc_util import Client, running_server

skdata = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
pytest.importorskip("dlib", reason="needs the faces extra to find the face")


@pytest.fixture(scope="module")
def engine():
    import torch

    from engine.session import AvatarEngine

    torch.set_num_threads(1)
    return AvatarEngine("demo")


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return _png(skdata.astronaut())


def config(engine, **kw) -> ServerConfig:
    kw.setdefault("admission", False)
    kw.setdefault("photo_steps", 20)
    kw.setdefault("photo_wplus_steps", 10)
    return ServerConfig(engine=engine, **kw)


async def post_photo(url: str, body: bytes, sid, content_type: str = "image/png") -> tuple[int, dict]:
    headers = {"Content-Type": content_type}
    if sid is not None:
        headers["X-Session-Id"] = sid
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/photo", data=body, headers=headers,
                             timeout=aiohttp.ClientTimeout(total=60)) as r:
            return r.status, await r.json()


async def wait_message(client: Client, pred, timeout: float) -> dict:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        for m in client.rx.messages:
            if pred(m):
                return m
        await asyncio.sleep(0.05)
    raise AssertionError(f"no such control message within {timeout} s: {client.rx.messages[-5:]}")


def _pooled(img: np.ndarray, cells: int = 16) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h // cells * cells, : w // cells * cells].reshape(cells, h // cells, cells, w // cells, 3).mean((1, 3))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(_pooled(a.astype(np.float64)) - _pooled(b.astype(np.float64))).mean())


async def test_an_uploaded_photo_becomes_the_sessions_face(engine, astronaut):
    from engine.inversion.identity_file import read_identity

    async with running_server(config(engine)) as (url, app):
        state = app[STATE_KEY]
        client = Client(url)
        await client.connect()
        try:
            await client.channel_open()
            await client.wait_frames(5, timeout=20)
            before = client.rx.frames[-1].to_ndarray(format="rgb24")
            status, body = await post_photo(url, astronaut, client.session_id)
            assert status == 202 and body["steps"] == 30, body
            # a second upload meanwhile: busy, in one line
            status, busy = await post_photo(url, astronaut, client.session_id)
            assert status == 409 and busy["error"].startswith("busy: another photo"), busy
            done = await wait_message(client, lambda m: m.get("type") == "identity" and m.get("photo"), 120)
            assert done["psnr_db"] > 10 and 0 < done["ssim"] <= 1, done
            progress = [m for m in client.rx.messages if m.get("type") == "photo"]
            assert progress and progress[-1]["step"] == progress[-1]["steps"] == 30, progress
            assert [m["step"] for m in progress] == sorted(m["step"] for m in progress)
            files = state.photos.files()
            assert len(files) == 1
            ident = read_identity(files[0], generator_hash=engine.checkpoint_hash)
            assert not ident.noise                   # the generator's noise maps are kept (shared by all)
            with_frames = len(client.rx.frames)
            await client.wait_frames(with_frames + 10, timeout=20)
            after = client.rx.frames[-1].to_ndarray(format="rgb24")
            import torch
            with torch.no_grad():
                recon = engine.to_uint8(engine.synthesize(torch.from_numpy(ident.ws)))[0]
            assert _distance(after, recon) < 0.5 * _distance(before, recon), (_distance(after, recon),
                                                                               _distance(before, recon))
            assert state.photos.job is None
        finally:
            await client.close()
        for _ in range(100):                          # the session's file goes with it
            if not state.photos.files():
                break
            await asyncio.sleep(0.05)
        assert state.photos.files() == []


async def test_bad_uploads_are_refused_at_once_and_the_stream_goes_on(engine, astronaut):
    async with running_server(config(engine, photo_max_bytes=2 * 2**20)) as (url, app):
        client = Client(url)
        await client.connect()
        try:
            await client.wait_frames(3, timeout=20)
            sid = client.session_id
            cases = [
                (b"hello, not an image", sid, "image/jpeg", 415, "not an image"),
                (_png(np.full((300, 300, 3), 200, np.uint8)), sid, "image/png", 422, "no face found"),
                (astronaut, sid, "text/plain", 415, "takes an image"),
                (astronaut, None, "image/png", 404, "no such session"),
                (astronaut, "0123456789abcdef", "image/png", 404, "no such session"),
                (b"", sid, "image/png", 400, "empty"),
                (b"\0" * (2 * 2**20 + 1), sid, "image/png", 413, "too large"),
            ]
            for data, who, ctype, want, text in cases:
                status, body = await post_photo(url, data, who, ctype)
                assert status == want and text in body["error"], (want, text, status, body)
            n = len(client.rx.frames)
            await client.wait_frames(n + 5, timeout=10)
            assert app[STATE_KEY].photos.job is None and app[STATE_KEY].photos.files() == []
        finally:
            await client.close()
    async with running_server(config(engine, photo_upload=False)) as (url, _app):
        client = Client(url)
        await client.connect()
        try:
            status, body = await post_photo(url, astronaut, client.session_id)
            assert status == 403 and "off" in body["error"]
        finally:
            await client.close()


async def test_an_inversion_stops_when_its_session_goes_or_its_time_is_up(engine, astronaut):
    async with running_server(config(engine, photo_steps=100_000, photo_timeout_s=3.0)) as (url, app):
        jobs = app[STATE_KEY].photos
        a = Client(url)
        await a.connect()
        try:
            await a.channel_open()
            status, _ = await post_photo(url, astronaut, a.session_id)
            assert status == 202
            err = await wait_message(a, lambda m: m.get("type") == "error", 30)
            assert "took longer than 3 s" in err["error"], err
            assert jobs.job is None
            app[STATE_KEY].config.photo_timeout_s = 120.0
            seen = len(a.rx.messages)
            status, _ = await post_photo(url, astronaut, a.session_id)     # the slot is free again
            assert status == 202
            job = jobs.job
            await wait_message(a, lambda m: m.get("type") == "photo" and m in a.rx.messages[seen:], 30)
        finally:
            await a.close()
        t_end = time.monotonic() + 15
        while (jobs.job is not None or not job.stop.is_set()) and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        assert job.stop.is_set() and jobs.job is None
        assert "session closed" in job.reason
