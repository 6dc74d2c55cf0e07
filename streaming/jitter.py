"""The receive side: jitter buffers for aiortc's receiver that release what is complete at once.

* :class:`NoWaitAudioJitterBuffer` (the server's microphone receiver): 0 ms of hold instead of
  aiortc's 80 ms prefetch for audio;
* :class:`MarkerVideoJitterBuffer` (for aiortc *clients* of the avatar: bots, benchmarks): a video
  frame is released when its last packet (the RTP marker bit) is in, not when the next frame's
  first packet arrives: one frame interval less (40 ms at 25 fps), which browsers never wait.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from aiortc.jitterbuffer import JitterBuffer, JitterFrame

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpReceiver
    from aiortc.rtp import RtpPacket

__all__ = ["MarkerVideoJitterBuffer", "NoWaitAudioJitterBuffer", "install_marker_video", "install_no_wait_audio"]

_ATTR = "_RTCRtpReceiver__jitter_buffer"


class NoWaitAudioJitterBuffer:
    """Drop-in for aiortc's audio ``JitterBuffer`` that releases each packet as it arrives.

    aiortc's receiver builds ``JitterBuffer(capacity=16, prefetch=4)`` for audio: a packet is only
    released once four later packets have arrived (80 ms at 20 ms/packet) and the next one always
    has to arrive first to mark the end of a frame. An Opus RTP packet is a complete frame, so this
    buffer hands every packet newer than the last one released straight to the decoder, drops
    duplicates and late packets, and never waits: 0 ms of hold instead of 80 ms.
    """

    def __init__(self) -> None:
        self._last: Optional[int] = None
        self.released = 0
        self.late = 0

    @property
    def capacity(self) -> int:
        return 16

    def add(self, packet: "RtpPacket") -> tuple[bool, Optional[JitterFrame]]:
        seq = packet.sequence_number
        if self._last is not None:
            delta = (seq - self._last) & 0xFFFF
            if delta == 0 or delta >= 0x8000:   # duplicate or older than the last one released
                self.late += 1
                return False, None
        self._last = seq
        self.released += 1
        return False, JitterFrame(data=getattr(packet, "_data", b""), timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # pragma: no cover - interface parity
        pass


def install_no_wait_audio(receiver: "RTCRtpReceiver") -> bool:
    """Replace an audio receiver's jitter buffer by :class:`NoWaitAudioJitterBuffer`.

    Call it from the peer connection's ``track`` event (before RTP flows). Returns False (and
    leaves the receiver alone) when aiortc's internals differ from the 1.x layout this targets.
    """
    return _install(receiver, "audio", NoWaitAudioJitterBuffer)


class MarkerVideoJitterBuffer(JitterBuffer):
    """aiortc's video ``JitterBuffer`` (capacity 512) that also releases a frame on its marker bit.

    aiortc assembles a video frame only when a packet of the *next* frame arrives, so every frame
    waits one frame interval (two under a server that drops frames). The sender sets the RTP
    marker on a frame's last packet (RFC 7741 for VP8, RFC 6184 for H.264): as soon as every
    packet from the oldest one buffered up to a marker packet of the same timestamp is in (in any
    order), the frame is complete and leaves at once. Anything else (a lost packet, no marker) is
    left to aiortc's own rule, so NACK and PLI work as before.
    """

    def __init__(self) -> None:
        super().__init__(capacity=512, is_video=True)
        self.on_marker = 0          # frames released by their marker packet

    def add(self, packet: "RtpPacket") -> tuple[bool, Optional[JitterFrame]]:
        pli, frame = super().add(packet)
        if frame is None and self._origin is not None:
            frame = self._complete_head()
        return pli, frame

    def _complete_head(self) -> Optional[JitterFrame]:
        """The oldest buffered frame, removed, if its packets run without a gap from the oldest
        buffered packet to one with the marker bit."""
        head = self._packets[self._origin % self._capacity]
        if head is None:
            return None
        parts = []
        for i in range(self._capacity):
            p = self._packets[(self._origin + i) % self._capacity]
            if p is None or p.timestamp != head.timestamp:
                return None
            parts.append(getattr(p, "_data", b""))
            if p.marker:
                self.remove(i + 1)
                self.on_marker += 1
                return JitterFrame(data=b"".join(parts), timestamp=head.timestamp)
        return None


def install_marker_video(receiver: "RTCRtpReceiver") -> bool:
    """Replace a video receiver's jitter buffer by :class:`MarkerVideoJitterBuffer` (call it from
    the peer connection's ``track`` event). Returns False (receiver untouched) when aiortc's
    internals differ from the 1.x layout this targets."""
    return _install(receiver, "video", MarkerVideoJitterBuffer)


def _install(receiver, kind: str, make) -> bool:
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != kind or not hasattr(receiver, _ATTR):
        return False
    setattr(receiver, _ATTR, make())
    return True
