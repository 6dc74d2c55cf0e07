"""The receive side: a no-wait audio jitter buffer for aiortc's receiver (0 ms of hold instead of
aiortc's 80 ms prefetch for audio)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from aiortc.jitterbuffer import JitterFrame

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpReceiver
    from aiortc.rtp import RtpPacket

__all__ = ["NoWaitAudioJitterBuffer", "install_no_wait_audio"]


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
    attr = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "audio" or not hasattr(receiver, attr):
        return False
    setattr(receiver, attr, NoWaitAudioJitterBuffer())
    return True
