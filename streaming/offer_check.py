"""Validation of a client's SDP offer before any peer connection is made for it: parseable,
receives video, every m-line with its own mid and a DTLS fingerprint, a BUNDLE group naming only
those mids (aiortc would otherwise fail in a background task when the group's first mid is not an
m-line), ports and addresses in range (aioice would otherwise log ``OverflowError`` tracebacks for
candidate ports >= 65536)."""
from __future__ import annotations

import ipaddress

from aiortc.sdp import SessionDescription

__all__ = ["check_offer"]


def _address(value: str, what: str) -> None:
    if value is None:
        return
    if value.endswith(".local"):           # an mDNS host candidate (Chromium hides local IPs so)
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IP address") from None


def _port(value, what: str, lo: int = 0) -> None:
    if value is None:
        return
    if not isinstance(value, int) or not lo <= value <= 65535:
        raise ValueError(f"{what} {value!r} is out of range ({lo}..65535)")


def check_offer(sdp: str) -> SessionDescription:
    """The parsed offer, or ValueError saying what is wrong with it."""
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises ValueError, KeyError, IndexError, ...
        raise ValueError(f"bad SDP offer: {type(exc).__name__}: {exc}") from None
    if not desc.media:
        raise ValueError("bad SDP offer: no m-lines")
    if not any(m.kind == "video" and m.direction in ("recvonly", "sendrecv", None) for m in desc.media):
        raise ValueError("the offer does not receive video (needs a recvonly or sendrecv video m-line)")
    mids = [m.rtp.muxId for m in desc.media]
    if any(not mid for mid in mids) or len(set(mids)) != len(mids):
        raise ValueError(f"bad SDP offer: every m-line needs its own a=mid (got {mids})")
    for group in desc.group:
        if group.semantic == "BUNDLE" and (not group.items or any(item not in mids for item in group.items)):
            raise ValueError(f"bad SDP offer: a=group:BUNDLE {' '.join(map(str, group.items))} names a mid "
                             f"no m-line has (mids: {' '.join(mids)})")
    for i, m in enumerate(desc.media):
        where = f"m-line {i} ({m.kind})"
        _port(m.port, f"bad SDP offer: {where} port")
        _port(m.rtcp_port, f"bad SDP offer: {where} rtcp port")
        _address(m.host, f"bad SDP offer: {where} connection address")
        if m.dtls is None or not m.dtls.fingerprints:
            raise ValueError(f"bad SDP offer: {where} has no DTLS fingerprint (a=fingerprint)")
        for c in m.ice_candidates:
            _port(c.port, f"bad SDP offer: {where} candidate port", lo=1)
            _address(c.ip, f"bad SDP offer: {where} candidate address")
            _port(c.relatedPort, f"bad SDP offer: {where} candidate related port")
    return desc
