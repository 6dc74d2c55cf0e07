"""Fixtures of the WebRTC tests: every peer connection on 127.0.0.1 (aioice leaves loopback
candidates out; the patch puts them back), and one engine per module for the streaming mechanics."""
from __future__ import annotations

import contextlib

import pytest

try:
    from streaming.ice import loopback_candidates
except ImportError:        # no serve extra: the tests that need it skip themselves
    loopback_candidates = contextlib.nullcontext


@pytest.fixture(autouse=True)
def loopback():
    with loopback_candidates():
        yield


@pytest.fixture(scope="module")
def engine():
    """The untrained seeded generator on placeholder directions: big PCA motions are easy to see
    (a module that needs the demo face defines its own ``engine``)."""
    from engine.session import AvatarEngine
    return AvatarEngine("random")
