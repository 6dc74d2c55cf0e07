"""aiohttp signalling server: web client, ``POST /offer`` (SDP offer → answer), ``GET /health``.

One aiortc ``RTCPeerConnection`` per client. The microphone track feeds the client's
:class:`~streaming.sessions.StreamSession` (audio receive path without aiortc's 80 ms jitter-buffer
wait, see :func:`streaming.jitter.install_no_wait_audio`); an :class:`AvatarVideoTrack` sends the
avatar back; a data channel labelled ``control`` carries identity / interrupt commands and stats.
Limits: ``max_sessions`` (503), 64 KiB request bodies (413), malformed JSON/SDP (400); a client
that vanishes is closed by a watchdog (no packets for ``idle_timeout_s``, or never connected
within ``connect_timeout_s``).
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from .embed import audio_frame_to_pcm
from .ice import is_loopback_host, loopback_candidates
from .sessions import ServerFull, SessionRegistry, StreamSession
from .jitter import install_no_wait_audio
from .tracks import AvatarVideoTrack

__all__ = ["ServerConfig", "create_app", "ClientConnection", "STATE_KEY", "WebClientMissing", "find_web_root"]

log = logging.getLogger("stylecast.server")
MAX_BODY = 64 * 1024
MAX_CONTROL_MESSAGE = 4096
#: What the page cannot work without; ``create_app`` refuses a web root that lacks one of them.
WEB_CLIENT_FILES = ("index.html", "app.js")


class WebClientMissing(FileNotFoundError):
    """The browser client is not there (a broken install, a wrong ``web_root``); a one-line message."""


def find_web_root() -> Path:
    """The folder of the installed ``web_client`` package (index.html, app.js, style.css: package
    data of the wheel, or the checkout's folder in an editable install); :class:`WebClientMissing`
    when the package or its files are not installed."""
    try:
        spec = importlib.util.find_spec("web_client")
    except (ImportError, ValueError):
        spec = None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    if not locations:
        raise WebClientMissing("web client not found: the web_client package is not installed "
                               "(reinstall stylecast with the serve extra)")
    for root in locations:
        if all((root / name).is_file() for name in WEB_CLIENT_FILES):
            return root.resolve()
    return check_web_root(locations[0], "a broken install: reinstall stylecast with the serve extra")


def check_web_root(root: Path, hint: str = "ServerConfig.web_root") -> Path:
    """``root`` resolved, or :class:`WebClientMissing` naming the first missing file."""
    root = Path(root)
    for name in WEB_CLIENT_FILES:
        if not (root / name).is_file():
            raise WebClientMissing(f"web client not found: {root / name} is missing ({hint})")
    return root.resolve()


@dataclass
class ServerConfig:
    """What ``create_app`` needs. ``engine`` may be a ready AvatarEngine (tests share one)."""

    device: str = "cpu"
    host: str = "127.0.0.1"
    port: int = 8080
    generator: str = "demo"
    resolution: Optional[int] = None
    fps: float = 25.0
    max_sessions: int = 4
    identity: Union[int, str] = 0      # a seed or the path of a .npy latent (w / ws)
    truncation: float = 0.7
    driver: str = "default"
    web_root: Optional[Path] = None           # None: the installed web_client package (find_web_root)
    engine: Any = None
    synthesize: Optional[Callable] = None    # AvatarEngine(synthesize=...) hook (overload tests)
    stamp: bool = False                       # frame index in the image (tests, benchmarks)
    grace_s: float = 0.06
    idle_timeout_s: float = 5.0
    connect_timeout_s: float = 15.0
    stats_interval_s: float = 1.0
    loopback_ice: Optional[bool] = None       # None: decided from ``host``
    ice_servers: Optional[list] = None        # STUN/TURN URLs; None: none on loopback, aiortc's default otherwise


class ServerState:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.web_root = check_web_root(config.web_root) if config.web_root is not None else find_web_root()
        self.registry = SessionRegistry(config.max_sessions)
        self.engine = config.engine
        self.clients: dict[str, "ClientConnection"] = {}
        self.closing = False
        self.bad_requests = 0
        self.loopback = config.loopback_ice if config.loopback_ice is not None else is_loopback_host(config.host)

    def rtc_configuration(self) -> RTCConfiguration:
        """No STUN round trips for a loopback server (nothing to discover); else the configured
        servers, or aiortc's default STUN server when none are configured."""
        servers = self.config.ice_servers
        if servers is None:
            return RTCConfiguration(iceServers=[]) if self.loopback else RTCConfiguration()
        return RTCConfiguration(iceServers=[RTCIceServer(u) for u in servers])


#: ``app[STATE_KEY]``: the server's ServerState (config, registry, engine, clients).
STATE_KEY = web.AppKey("stylecast", ServerState)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ClientConnection:
    """One client: peer connection, stream session, background tasks; :meth:`close` frees all."""

    def __init__(self, state: ServerState, sid: str, pc: RTCPeerConnection, stream: StreamSession) -> None:
        self.state = state
        self.sid = sid
        self.pc = pc
        self.stream = stream
        self.truncation = state.config.truncation      # the session's current ψ ({"type": "random"} keeps it)
        self.tasks: set[asyncio.Task] = set()
        self.channel = None
        self.created = time.monotonic()
        self._closing: Optional[asyncio.Task] = None
        self.closed = asyncio.Event()
        self.control: asyncio.Queue = asyncio.Queue(maxsize=32)   # data-channel messages, in order

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def close(self, reason: str = "") -> asyncio.Task:
        """Idempotent; returns the task doing the teardown."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(reason))
        return self._closing

    async def _close(self, reason: str) -> None:
        log.info("session %s closing (%s)", self.sid, reason or "closed")
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        try:
            await asyncio.wait_for(self.pc.close(), 5.0)
        except Exception:
            log.exception("session %s: pc.close failed", self.sid)
        await self.stream.aclose()
        self.state.registry.release(self.sid)
        self.state.clients.pop(self.sid, None)
        self.closed.set()

    # -- tasks ----------------------------------------------------------------------------------

    async def pump_audio(self, track) -> None:
        """Received mic audio (decoded 48 kHz s16 frames) → StreamSession inbox."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrival = time.monotonic()
            try:
                pcm, rate, channels = audio_frame_to_pcm(frame)
                self.stream.push_audio(pcm, rate, channels, arrival=arrival)
            except Exception as exc:  # a bad frame is dropped, the stream goes on
                log.warning("session %s: bad audio frame: %s", self.sid, exc)

    async def watchdog(self) -> None:
        cfg = self.state.config
        last_rx, last_change = -1, time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, cfg.idle_timeout_s / 4))
            now = time.monotonic()
            state = self.pc.connectionState
            if state in ("failed", "closed"):
                self.close(f"connection {state}")
                return
            if state != "connected":
                if now - self.created > cfg.connect_timeout_s:
                    self.close("never connected")
                    return
                continue
            rx = _packets_received(self.pc)
            if rx is None:        # aiortc without the counter: rely on the connection state only
                continue
            if rx != last_rx:
                last_rx, last_change = rx, now
            elif now - last_change > cfg.idle_timeout_s:
                self.close(f"no packets for {cfg.idle_timeout_s:g} s")
                return

    async def send_stats(self) -> None:
        while True:
            await asyncio.sleep(self.state.config.stats_interval_s)
            ch = self.channel
            if ch is None or ch.readyState != "open":
                continue
            st = self.stream.stats()
            synth = st["stages_ms"].get("synthesis", {}).get("p50")
            self._send({"type": "stats", "fps": round(st["fps"], 2), "synthesis_ms": synth,
                        "latency_ms": st["latency_ms"], "dropped": st["dropped"], "frames": st["frames"],
                        "arrival_to_frame_ms": st["arrival_to_frame_ms"],
                        "stages_ms": st["stages_ms"], "silence_s": round(st["silence_s"], 3)})

    def _send(self, message: dict) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(message))
            except Exception:
                pass

    async def run_control(self) -> None:
        while True:
            await self.on_control(await self.control.get())

    async def on_control(self, message) -> None:
        """Handle one data-channel message; bad ones get ``{"type":"error"}``, never an exception."""
        try:
            if isinstance(message, bytes):
                raise ValueError("control messages are JSON text")
            if len(message) > MAX_CONTROL_MESSAGE:
                raise ValueError(f"message too long (> {MAX_CONTROL_MESSAGE} bytes)")
            msg = json.loads(message)
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise ValueError('expected a JSON object with a "type"')
            kind = msg["type"]
            if kind == "identity":
                seed, trunc = _identity_fields(msg, self.state.config.truncation)
                await self._apply_identity(seed, trunc)
            elif kind == "random":       # a new face, the session's current truncation kept
                await self._apply_identity(random.randrange(2**31), self.truncation)
            elif kind == "interrupt":
                await asyncio.wrap_future(self.stream.interrupt())
                self._send({"type": "interrupt"})
            else:
                raise ValueError(f"unknown message type {kind!r}")
        except json.JSONDecodeError as exc:
            self._send({"type": "error", "error": f"invalid JSON: {exc.msg}"})
        except (ValueError, TypeError, RuntimeError) as exc:
            self._send({"type": "error", "error": str(exc)})
        except Exception as exc:
            log.exception("session %s: control message failed", self.sid)
            self._send({"type": "error", "error": f"{type(exc).__name__}: {exc}"})

    async def _apply_identity(self, seed: int, trunc: float) -> None:
        await asyncio.wrap_future(self.stream.submit(lambda s: s.set_identity(seed, truncation_psi=trunc)))
        self.truncation = trunc
        self._send({"type": "identity", "seed": seed, "truncation": trunc})


def _packets_received(pc: RTCPeerConnection) -> Optional[int]:
    """Packets received on the pc's DTLS transports (RTP, RTCP, SCTP); None if this aiortc
    version does not keep the counter (aiortc 1.x ``RTCDtlsTransport.__rx_packets``)."""
    total = 0
    found = False
    seen = set()
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    sctp = pc.sctp
    if sctp is not None:
        transports.append(sctp.transport)
    for tr in transports:
        if tr is None or id(tr) in seen:
            continue
        seen.add(id(tr))
        count = getattr(tr, "_RTCDtlsTransport__rx_packets", None)
        if count is not None:
            found = True
            total += int(count)
    return total if found else None


def _identity_fields(msg: dict, default_trunc: float) -> tuple[int, float]:
    seed = msg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError('"seed" must be an integer in 0 .. 2**32-1')
    trunc = msg.get("truncation", default_trunc)
    if isinstance(trunc, bool) or not isinstance(trunc, (int, float)) or not -2.0 <= float(trunc) <= 2.0:
        raise ValueError('"truncation" must be a number in -2 .. 2')
    return int(seed), float(trunc)


def _receives_video(sdp: str) -> bool:
    from aiortc.sdp import SessionDescription

    media = SessionDescription.parse(sdp).media
    return any(m.kind == "video" and m.direction in ("recvonly", "sendrecv", None) for m in media)


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
    if request.content_length is not None and request.content_length > MAX_BODY:
        state.bad_requests += 1
        return _error(413, f"request body too large (> {MAX_BODY // 1024} KiB)")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        state.bad_requests += 1
        return _error(413, f"request body too large (> {MAX_BODY // 1024} KiB)")
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
        seed, trunc = cfg.identity, cfg.truncation
        ident = params.get("identity")
        if ident is not None:
            if not isinstance(ident, dict):
                raise ValueError('"identity" must be an object {"seed": int, "truncation": float}')
            seed, trunc = _identity_fields({"truncation": cfg.truncation, **ident}, cfg.truncation)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        state.bad_requests += 1
        return _error(400, f"malformed JSON: {exc}")
    except ValueError as exc:
        state.bad_requests += 1
        return _error(400, str(exc))

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
        if not _receives_video(pc.remoteDescription.sdp):
            raise _BadOffer("the offer does not receive video (needs a recvonly or sendrecv video m-line)")

        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(None, _new_session, state, seed, trunc)
        stream = StreamSession(session, realtime=True, grace_s=cfg.grace_s, stamp=cfg.stamp, name=sid)
        client = ClientConnection(state, sid, pc, stream)
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

            @channel.on("message")
            def on_message(message) -> None:
                try:
                    client.control.put_nowait(message)
                except asyncio.QueueFull:
                    client._send({"type": "error", "error": "too many control messages, slow down"})

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
    from engine.session import AvatarSession

    cfg = state.config
    session = AvatarSession(state.engine, fps=cfg.fps, identity=seed, driver=cfg.driver)
    if trunc != cfg.truncation and not isinstance(seed, str):     # a seed; a .npy latent is not truncated
        session.set_identity(seed, truncation_psi=trunc)
    return session


async def handle_health(request: web.Request) -> web.Response:
    state: ServerState = request.app[STATE_KEY]
    cfg = state.config
    engine = state.engine
    return web.json_response({
        "sessions": len(state.registry),
        "max_sessions": cfg.max_sessions,
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
    app.router.add_get("/static/{path:.+}", handle_static)
    app.cleanup_ctx.append(_lifecycle(state, state.loopback))
    app.on_shutdown.append(_on_shutdown)
    return app


def _lifecycle(state: ServerState, loopback: bool):
    async def ctx(app: web.Application):
        if state.engine is None:
            loop = asyncio.get_running_loop()
            state.engine = await loop.run_in_executor(None, _build_engine, state.config)
        with loopback_candidates(loopback):
            yield
        await close_all(state)
    return ctx


def _build_engine(cfg: ServerConfig):
    from engine.session import AvatarEngine

    kwargs: dict[str, Any] = {"device": cfg.device, "resolution": cfg.resolution}
    if cfg.synthesize is not None:
        kwargs["synthesize"] = cfg.synthesize
    return AvatarEngine(cfg.generator, **kwargs)


async def _on_shutdown(app: web.Application) -> None:
    await close_all(app[STATE_KEY])


async def close_all(state: ServerState) -> None:
    """Close every client (peer connection, tasks, worker)."""
    state.closing = True
    clients = list(state.clients.values())
    if clients:
        await asyncio.gather(*(c.close("server shutdown") for c in clients), return_exceptions=True)
