"""The server's session limit: a slot per live session, :class:`ServerFull` when none is free."""
from __future__ import annotations

import uuid
from typing import Any

__all__ = ["SessionRegistry", "ServerFull"]


class ServerFull(Exception):
    """No free session slot."""


class SessionRegistry:
    """Counts live sessions against ``max_sessions`` (event-loop only, no locking needed)."""

    def __init__(self, max_sessions: int) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = int(max_sessions)
        self._items: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._items)

    def reserve(self, item: Any = None) -> str:
        """Take a slot (raises :class:`ServerFull`); returns the new session id."""
        if len(self._items) >= self.max_sessions:
            raise ServerFull(f"server full ({self.max_sessions} sessions)")
        sid = uuid.uuid4().hex[:16]
        self._items[sid] = item
        return sid

    def set(self, sid: str, item: Any) -> None:
        if sid in self._items:
            self._items[sid] = item

    def release(self, sid: str) -> None:
        self._items.pop(sid, None)
