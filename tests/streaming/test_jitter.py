"""The receive-side jitter buffers of streaming.jitter, on real aiortc RTP packets."""
from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from streaming.jitter import MarkerVideoJitterBuffer, NoWaitAudioJitterBuffer


def test_no_wait_audio_jitter_buffer():
    jb = NoWaitAudioJitterBuffer()

    def packet(seq):
        p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
        p._data = bytes([seq % 256])
        return p
    released = []
    for seq in (65533, 65534, 65534, 65532, 65535, 0, 2, 1, 3):   # duplicate, late, wrap, gap, reorder
        pli, frame = jb.add(packet(seq))
        assert pli is False
        if frame is not None:
            released.append(frame.timestamp // 960)
    assert released == [65533, 65534, 65535, 0, 2, 3]               # each as it arrives, never held
    assert jb.late == 3


def _video_packets(frames: int, per_frame: int, first_seq: int = 65530):
    """``frames`` video frames of ``per_frame`` packets each (the last one with the marker bit),
    sequence numbers wrapping through 0; payload bytes name (frame, packet)."""
    out = []
    for f in range(frames):
        for i in range(per_frame):
            p = RtpPacket(payload_type=96, sequence_number=(first_seq + f * per_frame + i) & 0xFFFF,
                          timestamp=3600 * f, marker=i == per_frame - 1)
            p._data = bytes([f, i])
            out.append(p)
    return out


def _feed(jb, packets):
    """(index of the packet whose arrival released it, frame number, data) per released frame."""
    out = []
    for n, p in enumerate(packets):
        _, frame = jb.add(p)
        if frame is not None:
            out.append((n, frame.timestamp // 3600, frame.data))
    return out


def test_marker_video_buffer_releases_a_frame_on_its_last_packet():
    packets = _video_packets(5, 3)
    marker = _feed(MarkerVideoJitterBuffer(), packets)
    stock = _feed(JitterBuffer(capacity=512, is_video=True), _video_packets(5, 3))
    whole = [bytes([f, 0, f, 1, f, 2]) for f in range(5)]
    assert [(n, f) for n, f, _ in marker] == [(3 * f + 2, f) for f in range(5)]      # at its marker
    assert [d for _, _, d in marker] == whole
    # aiortc's own buffer holds each frame until the next frame's first packet: the last never leaves
    assert [(n, f) for n, f, _ in stock] == [(3 * f + 3, f) for f in range(4)]
    assert [d for _, _, d in stock] == whole[:4]


def test_marker_video_buffer_waits_for_a_missing_packet():
    packets = _video_packets(3, 3)
    lost = packets.pop(4)                     # frame 1, packet 1: lost, then retransmitted late
    order = packets[:5] + [lost] + packets[5:]
    jb = MarkerVideoJitterBuffer()
    got = _feed(jb, order)
    # frame 1's marker (order[4]) cannot release it; the retransmission completes it at once
    assert [(n, f) for n, f, _ in got] == [(2, 0), (5, 1), (8, 2)]
    assert got[1][2] == bytes([1, 0, 1, 1, 1, 2])
    assert jb.on_marker == 3


def test_marker_video_buffer_reordered_within_a_frame():
    packets = _video_packets(2, 4)
    order = [packets[0], packets[3], packets[2], packets[1]] + packets[4:]   # marker first
    got = _feed(MarkerVideoJitterBuffer(), order)
    assert [(n, f) for n, f, _ in got] == [(3, 0), (7, 1)]
    assert got[0][2] == bytes([0, 0, 0, 1, 0, 2, 0, 3])


def test_marker_video_buffer_installs_only_on_a_video_receiver():
    import asyncio

    from aiortc import RTCPeerConnection

    from streaming.jitter import install_marker_video, install_no_wait_audio

    async def run():
        pc = RTCPeerConnection()
        v = pc.addTransceiver("video", direction="recvonly").receiver
        a = pc.addTransceiver("audio", direction="recvonly").receiver
        try:
            assert install_marker_video(a) is False and install_no_wait_audio(v) is False
            assert install_marker_video(v) is True and install_no_wait_audio(a) is True
            assert isinstance(v._RTCRtpReceiver__jitter_buffer, MarkerVideoJitterBuffer)
        finally:
            await pc.close()
    asyncio.run(run())
