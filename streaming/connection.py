"""One client of the server: its peer connection, stream session, control channel and watchdog
tasks; :meth:`ClientConnection.close` frees all of it."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from typing import Optional

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from engine.runtime import release_session_memory

from .config import ServerState
from .embed import audio_frame_to_pcm
from .sessions import StreamSession

__all__ = ["ClientConnection", "MAX_CONTROL_MESSAGE"]

log = logging.getLogger("stylecast.server")
MAX_CONTROL_MESSAGE = 4096
CONTROL_RATE = 20.0      # control messages per second a client may send (more are dropped)
CONTROL_BURST = 40.0


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
        self.remote: Optional[str] = None            # the client's address (per-address offer limits)
        self.audio_at: Optional[float] = None        # when its last mic frame arrived (None: no mic yet)
        self._closing: Optional[asyncio.Task] = None
        self.closed = asyncio.Event()
        self.control: asyncio.Queue = asyncio.Queue(maxsize=32)   # data-channel messages, in order
        self.control_dropped = 0                     # messages dropped (rate or queue full)
        self._busy_said_at = float("-inf")           # when "slow down" was last sent (once a second)
        self._tokens = CONTROL_BURST                 # the control-message token bucket
        self._tokens_at = time.monotonic()

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
        # the gone session leaves reference cycles and freed memory in its threads' arenas:
        # collect them and give the pages back (off the loop)
        with contextlib.suppress(RuntimeError):      # the executor is gone at shutdown
            await asyncio.get_running_loop().run_in_executor(None, release_session_memory)

    # -- tasks ----------------------------------------------------------------------------------

    async def pump_audio(self, track) -> None:
        """Received mic audio (decoded 48 kHz s16 frames) → StreamSession inbox."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrival = self.audio_at = time.monotonic()
            try:
                pcm, rate, channels = audio_frame_to_pcm(frame)
                self.stream.push_audio(pcm, rate, channels, arrival=arrival)
            except Exception as exc:  # a bad frame is dropped, the stream goes on
                log.warning("session %s: bad audio frame: %s", self.sid, exc)

    async def watchdog(self) -> None:
        """Closes a connection that failed, never connected or went silent (``idle_timeout_s``);
        holds its stream (no frames made) once a client that sends its microphone (RTP every
        20 ms) sent no packet for ``quiet_hold_s``, so one that vanished costs nothing while it
        waits to be closed. A client without a microphone sends only RTCP (about once a second)
        and is never held."""
        cfg = self.state.config
        last_rx, last_change = -1, time.monotonic()
        while True:
            await asyncio.sleep(min(0.25, cfg.quiet_hold_s / 2, cfg.idle_timeout_s / 4))
            now = time.monotonic()
            state = self.pc.connectionState
            if state in ("failed", "closed"):
                self.close(f"connection {state}")
                return
            if state != "connected":
                if now - self.created > cfg.connect_timeout_s:
                    if self.state.limiter is not None:
                        self.state.limiter.unconnected(self.remote)
                    self.close("never connected")
                    return
                continue
            rx = _packets_received(self.pc)
            if rx is None:        # aiortc without the counter: rely on the connection state only
                continue
            if rx != last_rx:
                last_rx, last_change = rx, now
                if self.stream.held:
                    log.info("session %s: packets again, streaming", self.sid)
                    self.stream.hold(False)
            elif now - last_change > cfg.idle_timeout_s:
                self.close(f"no packets for {cfg.idle_timeout_s:g} s")
                return
            elif (now - last_change > cfg.quiet_hold_s and self.audio_at is not None and not self.stream.held
                  and self.stream.started):
                log.info("session %s: no packets for %g s, holding its frames", self.sid, cfg.quiet_hold_s)
                self.stream.hold(True)

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

    def accept_control(self, message) -> None:
        """A data-channel message arrives (event loop): queued for :meth:`run_control`, or, beyond
        the token bucket (``CONTROL_RATE``/s, burst ``CONTROL_BURST``) or a full queue, dropped at
        the cost of a counter instead of being parsed and answered on the loop every session
        shares; "slow down" is said at most once a second (no amplification)."""
        now = time.monotonic()
        self._tokens = min(CONTROL_BURST, self._tokens + (now - self._tokens_at) * CONTROL_RATE)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            try:
                self.control.put_nowait(message)
                return
            except asyncio.QueueFull:
                pass
        self.control_dropped += 1
        if now - self._busy_said_at >= 1.0:
            self._busy_said_at = now
            self._send({"type": "error", "error": f"too many control messages, slow down "
                                                  f"({self.control_dropped} dropped)"})

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
        except RecursionError:
            self._send({"type": "error", "error": "invalid JSON: nested too deep"})
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
