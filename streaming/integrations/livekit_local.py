"""An in-process stand-in for a LiveKit room: the avatar's ``lk.*`` protocol and ``AvatarRunner``
without a LiveKit server (the tests and ``benchmarks.bots`` use it; nothing leaves the process,
published tracks are only kept in a list). :class:`FakeNet` joins participants; each gets a
:class:`FakeRoom` with what LiveKit Agents' avatar I/O (``DataStreamAudioOutput``,
``DataStreamAudioReceiver``, ``AvatarRunner``) uses of ``rtc.Room``: connection state, remote
participants and the ``participant_active`` event, RPC (``register_rpc_method`` /
``perform_rpc``, handlers sync or async, ``UNSUPPORTED_METHOD`` when none), byte streams
(``stream_bytes`` → the receiver's ``register_byte_stream_handler``) and ``publish_track``. Every
RPC is recorded in ``FakeNet.rpcs`` as ``(caller, destination, method, payload, response)``.
"""
from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from livekit import rtc

_ids = itertools.count(1)


@dataclass
class _Info:
    stream_id: str
    topic: str
    attributes: dict = field(default_factory=dict)


class FakeReader:
    """A byte stream as received: ``info`` and async iteration over its chunks."""

    def __init__(self, info: _Info):
        self.info = info
        self._chunks: asyncio.Queue = asyncio.Queue()

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._chunks.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class FakeWriter:
    def __init__(self, readers: list[FakeReader]):
        self._readers = readers
        self.closed = False

    async def write(self, data: bytes) -> None:
        for r in self._readers:
            r._chunks.put_nowait(bytes(data))

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            for r in self._readers:
                r._chunks.put_nowait(None)


class _Publication:
    async def wait_for_subscription(self) -> None:
        return None


class FakeRemote:
    def __init__(self, identity: str, kind):
        self.identity, self.kind = identity, kind
        self.state = rtc.ParticipantState.PARTICIPANT_STATE_ACTIVE
        self.attributes: dict = {}
        self.track_publications: dict = {}


class FakeLocal:
    def __init__(self, net: "FakeNet", identity: str, kind):
        self.net, self.identity, self.kind = net, identity, kind
        self._rpc_handlers: dict = {}
        self.published: list = []

    def register_rpc_method(self, method: str, handler=None):
        if handler is None:                       # used as a decorator
            return lambda fn: self.register_rpc_method(method, fn) or fn
        self._rpc_handlers[method] = handler

    async def perform_rpc(self, *, destination_identity: str, method: str, payload: str,
                          response_timeout: float = 10.0) -> str:
        dest = self.net.rooms[destination_identity].local_participant
        handler = dest._rpc_handlers.get(method)
        if handler is None:
            self.net.rpcs.append((self.identity, destination_identity, method, payload, "unsupported"))
            raise rtc.RpcError(rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD, f"no handler for {method}")
        data = rtc.RpcInvocationData(request_id=str(next(_ids)), caller_identity=self.identity, payload=payload,
                                     response_timeout=response_timeout, method=method)
        await asyncio.sleep(0.002)                # a network hop
        result = handler(data)
        if asyncio.iscoroutine(result):
            result = await result
        self.net.rpcs.append((self.identity, destination_identity, method, payload, result))
        return result

    async def stream_bytes(self, *, name: str, topic: str, destination_identities=None, attributes=None, **_):
        info = _Info(stream_id=f"{name}-{next(_ids)}", topic=topic, attributes=dict(attributes or {}))
        readers = []
        for ident in destination_identities or [i for i in self.net.rooms if i != self.identity]:
            room = self.net.rooms[ident]
            handler = room._byte_handlers.get(topic)
            if handler is not None:
                reader = FakeReader(info)
                readers.append(reader)
                handler(reader, self.identity)
        return FakeWriter(readers)

    async def publish_track(self, track, options=None):
        self.published.append(track)
        return _Publication()


class FakeRoom(rtc.EventEmitter):
    def __init__(self, net: "FakeNet", identity: str, kind):
        super().__init__()
        self.net, self.name = net, "fake-room"
        self.local_participant = FakeLocal(net, identity, kind)
        self.remote_participants: dict = {}
        self._byte_handlers: dict = {}

    def isconnected(self) -> bool:
        return True

    def register_byte_stream_handler(self, topic: str, handler) -> None:
        self._byte_handlers[topic] = handler


class FakeNet:
    """Participants in one room, all connected to each other."""

    def __init__(self):
        self.rooms: dict[str, FakeRoom] = {}
        self.rpcs: list = []

    def join(self, identity: str, kind=rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD) -> FakeRoom:
        room = FakeRoom(self, identity, kind)
        for other in self.rooms.values():
            remote = FakeRemote(identity, kind)
            other.remote_participants[identity] = remote
            other.emit("participant_active", remote)
            room.remote_participants[other.local_participant.identity] = FakeRemote(
                other.local_participant.identity, other.local_participant.kind)
        self.rooms[identity] = room
        return room
