"""Limits on ``POST /offer``: per address, a burst bound on new sessions and a penalty for offers
that reserve a slot and never connect (the cheap way to keep a server full: two such offers every
few seconds); for the whole server, a rate of new peer connections (a token bucket), since each
costs the event loop that every running stream shares tens of milliseconds and an attacker can
spread offers over many addresses. Bounded memory: at most ``max_addresses`` addresses are
remembered."""
from __future__ import annotations

import collections
import time
from typing import Optional

__all__ = ["OfferLimiter"]


class OfferLimiter:
    """``per_window`` sessions per address per ``window_s``; ``unconnected_max`` offers that never
    connected within ``penalty_window_s`` bar the address for ``penalty_s``; at most
    ``global_rate`` new sessions a second over all addresses (bursts of ``global_burst``)."""

    def __init__(self, per_window: int = 8, window_s: float = 10.0, unconnected_max: int = 3,
                 penalty_window_s: float = 60.0, penalty_s: float = 60.0, max_addresses: int = 10_000,
                 global_rate: float = 3.0, global_burst: float = 8.0) -> None:
        self.per_window, self.window_s = int(per_window), float(window_s)
        self.unconnected_max, self.penalty_window_s, self.penalty_s = int(unconnected_max), penalty_window_s, penalty_s
        self.max_addresses = int(max_addresses)
        self._offers: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._unconnected: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()
        self._barred: dict[str, float] = {}
        self.global_rate, self.global_burst = float(global_rate), float(global_burst)
        self._tokens, self._tokens_at = self.global_burst, None
        self.refused = 0

    def _log(self, table: collections.OrderedDict, addr: str, keep_s: float, now: float) -> collections.deque:
        q = table.pop(addr, None) or collections.deque()
        while q and q[0] < now - keep_s:
            q.popleft()
        table[addr] = q                      # most recent last
        while len(table) > self.max_addresses:
            table.popitem(last=False)
        return q

    def check(self, addr: Optional[str], now: Optional[float] = None) -> Optional[str]:
        """None if ``addr`` may open a session now (and count it), else why not (for a 429)."""
        if addr is None:
            return None
        now = time.monotonic() if now is None else now
        until = self._barred.get(addr)
        if until is not None:
            if now < until:
                self.refused += 1
                return (f"too many offers from {addr} that never connected; try again in "
                        f"{until - now:.0f} s")
            del self._barred[addr]
        q = self._log(self._offers, addr, self.window_s, now)
        if len(q) >= self.per_window:
            self.refused += 1
            return f"too many new sessions from {addr} ({self.per_window} per {self.window_s:g} s); slow down"
        if self._tokens_at is not None:
            self._tokens = min(self.global_burst, self._tokens + (now - self._tokens_at) * self.global_rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            self.refused += 1
            return (f"the server is starting too many sessions at once (at most {self.global_rate:g} a second); "
                    "try again in a second")
        self._tokens -= 1.0
        q.append(now)
        return None

    def unconnected(self, addr: Optional[str], now: Optional[float] = None) -> None:
        """An offer from ``addr`` held a slot and never connected."""
        if addr is None:
            return
        now = time.monotonic() if now is None else now
        q = self._log(self._unconnected, addr, self.penalty_window_s, now)
        q.append(now)
        if len(q) >= self.unconnected_max:
            self._barred[addr] = now + self.penalty_s
            q.clear()
            if len(self._barred) > self.max_addresses:
                for old in sorted(self._barred, key=self._barred.get)[: len(self._barred) - self.max_addresses]:
                    del self._barred[old]
