"""``POST /photo``: a live session's face from a photo the user uploads.

The page sends the image file as the request body with its session id in ``X-Session-Id``.
The server decodes it and finds the face before answering, so what cannot be used comes back at
once: 415 not an image, 422 no face, 413 too large, 404 no such session, 409 busy. Otherwise it
answers 202 and inverts the photo in the background (:func:`engine.inversion.run.invert_photo`, W
then W+; no tuning, because tuned weights would change the generator under every other session).
While it runs, ``{"type": "photo", "stage", "step", "steps", "loss"}`` messages go to that session's
control channel (at most four a second). When it is done the session switches to the new
identity and gets ``{"type": "identity", "photo": true, "psnr_db", "ssim", "identity_distance",
"seconds", "warnings"}`` (what in the photo will show, e.g. lips apart); a failure gets
``{"type": "error", "error": ...}``.

One inversion runs at a time per server, on a thread of its own; another upload meanwhile is
answered 409 with how long the running one has been going. An inversion stops when it passes
``photo_timeout_s`` or its session closes. The identity files live in a temporary folder of the
server's, one per session (replaced by its next upload, removed when it closes and at shutdown).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from aiohttp import web

from .config import STATE_KEY

__all__ = ["handle_photo", "PhotoJobs"]

log = logging.getLogger("stylecast.server")
PHOTO_SIDE = 4096          # longer photo sides are downscaled before the face search


class _Stop(Exception):
    """Raised inside the optimisation to end it (timeout, session gone, shutdown)."""


@dataclass
class _Job:
    sid: str
    started: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    reason: str = ""


class PhotoJobs:
    """The server's one inversion slot, its worker thread and its folder of identity files."""

    def __init__(self) -> None:
        self.job: Optional[_Job] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._dir: Optional[Path] = None
        self._count = 0
        self._latest: dict[str, Path] = {}       # sid → its current identity file

    @property
    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylecast-photo")
        return self._pool

    def new_path(self, sid: str) -> Path:
        """A fresh file name for ``sid``'s next identity (names are never reused)."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="stylecast-photos-"))
        self._count += 1
        return self._dir / f"{sid}-{self._count}.npz"

    def replace(self, sid: str, path: Path) -> None:
        old = self._latest.get(sid)
        self._latest[sid] = path
        if old is not None and old != path:
            _unlink(old)

    def forget(self, sid: str, path: Path) -> None:
        if self._latest.get(sid) == path:
            del self._latest[sid]
        _unlink(path)

    def files(self) -> list[Path]:
        return sorted(self._dir.glob("*.npz")) if self._dir is not None else []

    def close(self) -> None:
        if self.job is not None:
            self.job.reason = "server shutdown"
            self.job.stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        Path(path).unlink()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def handle_photo(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    cfg = state.config
    jobs: PhotoJobs = state.photos
    if state.closing:
        return _error(503, "server shutting down")
    if not cfg.photo_upload:
        return _error(403, "photo upload is off on this server")
    client = state.clients.get(request.headers.get("X-Session-Id", ""))
    if client is None:
        return _error(404, "no such session: start one, then send its session_id in X-Session-Id")
    origin = state.foreign_origin(request)
    if origin is not None:
        return _error(403, f"origin {origin} may not upload photos here")
    ctype = request.content_type
    if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        return _error(415, f"POST /photo takes an image (Content-Type image/...), not {ctype}")
    limit = int(cfg.photo_max_bytes)
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"photo too large (> {limit // 2**20} MiB)")
    if jobs.job is not None:
        return _error(409, f"busy: another photo is being inverted ({time.monotonic() - jobs.job.started:.0f} s so "
                           "far); try again when it is done")
    weights = getattr(state.engine, "identity_weights", None)
    if weights is not None and weights.tuned_from is not None:
        return _error(409, "this server renders a tuned identity's weights; photos can be inverted on a server "
                           "without one")
    job = jobs.job = _Job(client.sid)                  # taken before the first await: one at a time
    started = False
    try:
        try:
            async with asyncio.timeout(cfg.body_timeout_s):
                body = await _read_body(request, limit)
        except TimeoutError:
            return _error(408, f"photo not received within {cfg.body_timeout_s:g} s")
        if len(body) > limit:
            return _error(413, f"photo too large (> {limit // 2**20} MiB)")
        if not body:
            return _error(400, "empty request body: send the image file")
        try:
            photo = await asyncio.get_running_loop().run_in_executor(jobs.pool, _decode, bytes(body))
        except _Refused as exc:
            return _error(exc.status, str(exc))
        if client.sid not in state.clients:
            return _error(404, "the session closed")
        client.spawn(_run(state, client, job, photo))
        started = True
    finally:
        if not started and jobs.job is job:
            jobs.job = None
    steps = cfg.photo_steps + cfg.photo_wplus_steps
    return web.json_response({"status": "inverting", "steps": steps, "timeout_s": cfg.photo_timeout_s}, status=202)


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, or its first ``limit + 1`` bytes (the app's client_max_size is for JSON bodies)."""
    parts, size = [], 0
    while size <= limit:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _decode(body: bytes):
    """The photo as RGB, checked to hold a face (the answer to the upload itself)."""
    from engine.faces.photo import NoFaceInPhoto, PhotoError, find_face, load_photo

    try:
        photo = load_photo(body, max_side=PHOTO_SIDE)
    except PhotoError as exc:
        raise _Refused(415, str(exc).replace("the image data: ", "")) from None
    try:
        find_face(photo)
    except NoFaceInPhoto as exc:
        raise _Refused(422, str(exc)) from None
    except ImportError:
        raise _Refused(501, "this server cannot find faces (the faces extra is not installed)") from None
    return photo


async def _run(state, client, job: _Job, photo) -> None:
    """Invert in the worker thread, then switch the session; the file goes when the session does."""
    from engine.inversion.identity_file import write_identity
    from engine.inversion.project import Settings
    from engine.inversion.run import invert_photo

    cfg, jobs, engine = state.config, state.photos, state.engine
    loop = asyncio.get_running_loop()
    last_sent = [0.0]

    def progress(stage, step, steps, losses):
        if job.stop.is_set():
            raise _Stop()
        if time.monotonic() - job.started > cfg.photo_timeout_s:
            job.reason = f"it took longer than {cfg.photo_timeout_s:g} s"
            raise _Stop()
        now = time.monotonic()
        if now - last_sent[0] >= 0.25 or step == steps:
            last_sent[0] = now
            loop.call_soon_threadsafe(client._send, {"type": "photo", "stage": stage, "step": step, "steps": steps,
                                                     "loss": round(float(losses.get("total", 0.0)), 5)})

    def work():
        # the generator's noise maps are kept: projected ones would change every session's faces
        settings = Settings(steps=cfg.photo_steps, wplus_steps=cfg.photo_wplus_steps,
                            space="w+" if cfg.photo_wplus_steps else "w", optimize_noise=False)
        ident, _ = invert_photo(engine.G, photo, name=str(cfg.generator), settings=settings,
                                checkpoint=engine.checkpoint_hash, progress=False, callback=progress)
        return write_identity(jobs.new_path(client.sid), ident), ident.meta["report"]

    path = None
    try:
        try:
            path, report = await loop.run_in_executor(jobs.pool, work)
        except _Stop:
            client._send({"type": "error", "error": f"photo inversion stopped: {job.reason or 'session closed'}"})
            return
        except Exception as exc:            # a photo the projector cannot take: said, the server goes on
            log.warning("session %s: photo inversion failed: %s", client.sid, exc)
            client._send({"type": "error", "error": f"photo inversion failed: {type(exc).__name__}: {exc}"})
            return
        finally:
            if jobs.job is job:
                jobs.job = None
        try:
            await asyncio.wrap_future(client.stream.submit(lambda s: s.set_identity(str(path))))
        except (ValueError, RuntimeError, OSError) as exc:       # e.g. the session closed meanwhile
            client._send({"type": "error", "error": f"photo inversion done, but the face could not be set: {exc}"})
            return
        jobs.replace(client.sid, path)      # the session's previous photo file goes
        client._send({"type": "identity", "photo": True, "seconds": round(time.monotonic() - job.started, 1),
                      **{k: report.get(k) for k in ("psnr_db", "ssim", "identity_distance", "warnings")}})
        await client.closed.wait()          # (cancelled at close) the file stays while the session lives
    except asyncio.CancelledError:
        job.reason = job.reason or "session closed"
        job.stop.set()
        raise
    finally:
        if path is not None:
            jobs.forget(client.sid, path)
