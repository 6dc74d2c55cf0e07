"""aiohttp signalling server: web client, ``POST /offer`` (SDP offer → answer), ``GET /health``.

One aiortc ``RTCPeerConnection`` per client. The microphone track feeds the client's
:class:`~streaming.sessions.StreamSession` (audio receive path without aiortc's 80 ms jitter-buffer
wait, see :func:`streaming.jitter.install_no_wait_audio`); an :class:`AvatarVideoTrack` sends the
avatar back; a data channel labelled ``control`` carries identity / interrupt commands and stats;
``POST /photo`` turns an uploaded photo into the session's face (:mod:`streaming.photo_upload`).
Limits: ``max_sessions`` (503), 64 KiB request bodies (413), malformed JSON/SDP (400); a client
that vanishes is closed by a watchdog (no packets for ``idle_timeout_s``, or never connected
within ``connect_timeout_s``).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from engine.session import AvatarEngine, AvatarSession

from .config import STATE_KEY, ServerConfig, ServerState
from .connection import ClientConnection, _identity_fields
from .ice import loopback_candidates
from .jitter import install_no_wait_audio
from .offer_check import check_offer
from .photo_upload import PhotoJobs, handle_photo
from .registry import ServerFull
from .sessions import StreamSession
from .tracks import AvatarVideoTrack
from .web_root import WebClientMissing, find_web_root

__all__ = ["ServerConfig", "create_app", "http_options", "ClientConnection", "STATE_KEY", "WebClientMissing", "find_web_root"]

log = logging.getLogger("stylecast.server")
MAX_BODY = 64 * 1024


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _check_offer_sdp(sdp: Any) -> str:
    if not isinstance(sdp, str) or not sdp.strip():
        raise ValueError('"sdp" must be a non-empty string')
    if not sdp.lstrip().startswith("v=0"):
        raise ValueError("SDP must start with v=0")
    if "\nm=video " not in sdp.replace("\r\n", "\n"):
        raise ValueError("the offer has no video m-line (the avatar is sent as video)")
    return sdp


# -- handlers ------------------------------------------------------------------------------------

async def handle_offer(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE_KEY]
    cfg = state.config
    if state.closing:
        return _error(503, "server shutting down")
    if request.content_type != "application/json":
        state.bad_requests += 1
        return _error(415, f"POST /offer takes Content-Type: application/json, not {request.content_type}")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        state.bad_requests += 1
        return _error(415, f"POST /offer takes an uncompressed body, not Content-Encoding: {encoding[:40]}")
    origin = state.foreign_origin(request)
    if origin is not None:
        state.bad_requests += 1
        return _error(403, f"origin {origin} may not open sessions here (same origin only; "
                           "the server's allowed_origins / --allow-origin lists others)")
    if request.content_length is not None and request.content_length > MAX_BODY:
        state.bad_requests += 1
        return _error(413, f"request body too large (> {MAX_BODY // 1024} KiB)")
    try:
        async with asyncio.timeout(cfg.body_timeout_s):      # a body sent a byte a second holds nothing long
            body = await request.read()
    except TimeoutError:
        state.bad_requests += 1
        return _error(408, f"request body not received within {cfg.body_timeout_s:g} s")
    except web.HTTPRequestEntityTooLarge:
        state.bad_requests += 1
        return _error(413, f"request body too large (> {MAX_BODY // 1024} KiB)")
    except Exception as exc:   # a body that says gzip and is not, a connection cut mid-body, ...
        state.bad_requests += 1
        return _error(400, f"unreadable request body ({type(exc).__name__})")
    if len(body) > MAX_BODY:
        state.bad_requests += 1
        return _error(413, f"request body too large (> {MAX_BODY // 1024} KiB)")
    try:
        params = json.loads(body.decode("utf-8"))
        if not isinstance(params, dict):
            raise ValueError("expected a JSON object")
        if params.get("type") != "offer":
            raise ValueError('"type" must be "offer"')
        sdp = _check_offer_sdp(params.get("sdp"))
        check_offer(sdp)                 # before any peer connection exists
        seed, trunc = cfg.identity, cfg.truncation
        ident = params.get("identity")
        if ident is not None:
            if not isinstance(ident, dict):
                raise ValueError('"identity" must be an object {"seed": int, "truncation": float}')
            seed, trunc = _identity_fields({"truncation": cfg.truncation, **ident}, cfg.truncation)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        state.bad_requests += 1
        return _error(400, f"malformed JSON: {exc}")
    except RecursionError:
        state.bad_requests += 1
        return _error(400, "malformed JSON: nested too deep")
    except ValueError as exc:
        state.bad_requests += 1
        return _error(400, str(exc))

    limited = state.limiter.check(request.remote) if state.limiter is not None else None
    if limited is not None:
        return _error(429, limited)
    if state.capacity is not None:
        held = sum(1 for c in list(state.clients.values()) if c.stream.held)   # make no frames
        reason = state.capacity.refusal(len(state.registry) - held, _stream_fps(state))
        if reason is not None:
            state.refused_capacity += 1
            return _error(503, reason)
    try:
        sid = state.registry.reserve()
    except ServerFull as exc:
        return _error(503, str(exc))

    pc = None
    stream = None
    client: Optional[ClientConnection] = None
    try:
        pc = RTCPeerConnection(state.rtc_configuration())
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError, ... on bad SDP
            raise _BadOffer(f"bad SDP offer: {type(exc).__name__}: {exc}") from None

        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(None, _new_session, state, seed, trunc)
        stream = StreamSession(session, realtime=True, grace_s=cfg.grace_s, stamp=cfg.stamp, name=sid)
        client = ClientConnection(state, sid, pc, stream)
        client.remote = request.remote
        client.truncation = trunc          # kept by {"type": "random"}
        try:
            pc.addTrack(AvatarVideoTrack(stream))
        except Exception as exc:
            raise _BadOffer(f"bad SDP offer: cannot attach the video: {exc}") from None

        for tr in pc.getTransceivers():
            if tr.kind == "audio" and tr.receiver.track is not None:
                install_no_wait_audio(tr.receiver)
                client.spawn(client.pump_audio(tr.receiver.track))

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            if channel.label != "control":
                return
            client.channel = channel

            channel.on("message", client.accept_control)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                client.close(f"connection {pc.connectionState}")

        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # an offer aiortc parsed but cannot answer
            raise _BadOffer(f"bad SDP offer: {type(exc).__name__}: {exc}") from None
        state.registry.set(sid, client)
        state.clients[sid] = client
        client.spawn(client.watchdog())
        client.spawn(client.send_stats())
        client.spawn(client.run_control())
        local = pc.localDescription
        return web.json_response({"sdp": local.sdp, "type": local.type, "session_id": sid})
    except _BadOffer as exc:
        state.bad_requests += 1
        await _abandon(state, sid, pc, stream, client)
        return _error(400, str(exc))
    except Exception as exc:
        log.exception("offer failed")
        await _abandon(state, sid, pc, stream, client)
        return _error(500, f"could not start the session: {type(exc).__name__}: {exc}")


class _BadOffer(Exception):
    pass


def _stream_fps(state: ServerState) -> list:
    """Delivered fps of each running stream (None for its first 4 s and 4 s after a hold: the
    start is bursty; nothing for a held stream)."""
    out = []
    now = time.monotonic()
    for client in list(state.clients.values()):
        st = client.stream
        if st.held:
            continue
        settled = st.frames > 4 * st.fps and (st.resumed_at is None or now - st.resumed_at > 4.0)
        out.append(st.measured.fps() if st.started and settled else None)
    return out


async def _sample_capacity(state: ServerState) -> None:
    """Once a second: the live cost estimate; and when the streams really slow down (5 s in a row
    with two or more running, the newest more than 4 s old), the newest session goes and the
    ceiling is learned."""
    cap = state.capacity
    slow_for = 0
    while True:
        await asyncio.sleep(1.0)
        running = [c for c in list(state.clients.values()) if c.stream.started and not c.stream.held]
        cap.sample(len(running))
        settled = running and time.monotonic() - max(c.created for c in running) > 4.0   # joins are bursty
        slow_for = slow_for + 1 if len(running) >= 2 and settled and cap.slow(_stream_fps(state)) else 0
        if slow_for >= 5:
            slow_for = 0
            newest = max(running, key=lambda c: c.created)
            cap.learn_ceiling(len(running) - 1)
            state.evicted_capacity += 1
            log.warning("streams below %.0f fps with %d sessions: closing the newest; ceiling %d for %.0f s",
                        cap.min_fps, len(running), cap.ceiling, cap.ceiling_s)
            newest._send({"type": "error", "error": "server at capacity: the streams slowed down when this "
                                                    "session joined, so it was closed; try again later"})
            newest.close("server at capacity")


async def _abandon(state: ServerState, sid: str, pc, stream, client) -> None:
    if client is not None:
        for task in list(client.tasks):
            task.cancel()
    try:
        if pc is not None:
            await asyncio.wait_for(pc.close(), 5.0)
    except Exception:
        pass
    if stream is not None:
        await stream.aclose()
    state.registry.release(sid)
    state.clients.pop(sid, None)


def _new_session(state: ServerState, seed: int, trunc: float):
    cfg = state.config
    session = AvatarSession(state.engine, fps=cfg.fps, identity=seed, driver=cfg.driver)
    if trunc != cfg.truncation and not isinstance(seed, str):     # a seed; a .npy latent is not truncated
        session.set_identity(seed, truncation_psi=trunc)
    return session


async def handle_health(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE_KEY]
    cfg = state.config
    engine = state.engine
    cap = state.capacity
    return web.json_response({
        "sessions": len(state.registry),
        "max_sessions": state.registry.max_sessions,
        "capacity": None if cap is None else {"fits": cap.fits(), "per_session": cap.per_session, "other": cap.other,
                                              "budget": cap.budget, "idle": cap.idle, "source": cap.source,
                                              "refused": state.refused_capacity, "ceiling": cap.ceiling,
                                              "evicted": state.evicted_capacity},
        "device": str(getattr(engine, "device", cfg.device)),
        "resolution": getattr(engine, "resolution", cfg.resolution),
        "fps": cfg.fps,
        "generator": cfg.generator,
    })


async def handle_index(request: web.Request) -> web.StreamResponse:
    root: Path = request.app[STATE_KEY].web_root
    index = root / "index.html"
    if not index.is_file():
        return _error(404, f"web client not found ({index})")
    return web.FileResponse(index, headers={"Cache-Control": "no-cache"})


async def handle_static(request: web.Request) -> web.StreamResponse:
    root: Path = request.app[STATE_KEY].web_root
    rel = request.match_info["path"]
    if "\0" in rel:
        raise web.HTTPNotFound()
    path = (root / rel).resolve()
    if root not in path.parents or not path.is_file():
        raise web.HTTPNotFound(text=json.dumps({"error": "not found"}), content_type="application/json")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


@web.middleware
async def _errors_as_json(request: web.Request, handler):
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"request body too large (> {MAX_BODY // 1024} KiB)")
    except web.HTTPMethodNotAllowed as exc:
        return _error(405, f"method {request.method} not allowed (use {', '.join(sorted(exc.allowed_methods))})")
    except web.HTTPNotFound:
        return _error(404, "not found")


def http_options(config: ServerConfig) -> dict:
    """aiohttp server options for ``web.run_app`` / ``web.AppRunner``: a connection that has not
    sent a whole request within ``http_idle_timeout_s`` (a slow or half-open client), or idles that
    long between requests, is closed; request bodies are never decompressed (``POST /offer``
    refuses a ``Content-Encoding`` with 415: a body that claims gzip and is not would otherwise
    fail inside aiohttp's own parser)."""
    return {"keepalive_timeout": float(config.http_idle_timeout_s), "auto_decompress": False}


def create_app(config: ServerConfig) -> web.Application:
    """The aiohttp application. Builds the AvatarEngine at startup unless ``config.engine`` is set;
    closes every peer connection on shutdown. Raises :class:`WebClientMissing` (before anything
    starts) when the web client is not installed or ``config.web_root`` lacks its files."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_errors_as_json])
    state = ServerState(config)
    app[STATE_KEY] = state
    app.router.add_get("/", handle_index)
    app.router.add_get("/health", handle_health)
    app.router.add_post("/offer", handle_offer)
    app.router.add_post("/photo", handle_photo)
    state.photos = PhotoJobs()
    app.router.add_get("/static/{path:.+}", handle_static)
    app.cleanup_ctx.append(_lifecycle(state, state.loopback))
    app.on_shutdown.append(_on_shutdown)
    return app


def _lifecycle(state: ServerState, loopback: bool):
    async def ctx(app: web.Application):
        loop = asyncio.get_running_loop()
        if state.engine is None:
            state.engine = await loop.run_in_executor(None, _build_engine, state.config)
        sampler = None
        if state.capacity is not None:
            await loop.run_in_executor(None, state.capacity.probe, state.engine)
            if state.config.max_sessions is None:
                state.registry.max_sessions = state.capacity.fits()
            log.info("%s; at most %d session(s)", state.capacity.describe(), state.registry.max_sessions)
            sampler = asyncio.ensure_future(_sample_capacity(state))
        try:
            with loopback_candidates(loopback):
                yield
        finally:
            if sampler is not None:
                sampler.cancel()
        await close_all(state)
    return ctx


def _build_engine(cfg: ServerConfig):
    kwargs: dict[str, Any] = {"device": cfg.device, "resolution": cfg.resolution}
    if cfg.synthesize is not None:
        kwargs["synthesize"] = cfg.synthesize
    return AvatarEngine(cfg.generator, **kwargs)


async def _on_shutdown(app: web.Application) -> None:
    await close_all(app[STATE_KEY])


async def close_all(state: ServerState) -> None:
    """Close every client (peer connection, tasks, worker)."""
    state.closing = True
    if state.photos is not None:
        state.photos.close()
    clients = list(state.clients.values())
    if clients:
        await asyncio.gather(*(c.close("server shutdown") for c in clients), return_exceptions=True)
