"""Loopback-only ICE: offer 127.0.0.1 host candidates when the server listens on a loopback address.

aioice gathers its host candidates from ``aioice.ice.get_host_addresses`` (every interface address
except 127.0.0.1). A server bound to 127.0.0.1 is reachable only from this machine, so offering the
LAN addresses would just make ICE try pairs that cannot be used; instead the server patches that
function to return ``["127.0.0.1"]`` while it runs (and tests patch it the same way for their
in-process clients).
"""
from __future__ import annotations

import contextlib
import ipaddress
import threading
from typing import Iterator

import aioice.ice

__all__ = ["is_loopback_host", "loopback_candidates", "LOOPBACK_ADDRESSES"]

LOOPBACK_ADDRESSES = ["127.0.0.1"]

_original = aioice.ice.get_host_addresses
_lock = threading.Lock()
_depth = 0


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return list(LOOPBACK_ADDRESSES) if use_ipv4 else []


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any 127.0.0.0/8 or ::1 address."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def loopback_candidates(enabled: bool = True) -> Iterator[None]:
    """While active, every aioice gathering in this process offers only 127.0.0.1.

    Nestable (a reference count keeps the patch until the outermost exit); ``enabled=False`` is a
    no-op, so callers can write ``with loopback_candidates(is_loopback_host(host)):``.
    """
    global _depth
    if not enabled:
        yield
        return
    with _lock:
        _depth += 1
        aioice.ice.get_host_addresses = _loopback_host_addresses
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                aioice.ice.get_host_addresses = _original
