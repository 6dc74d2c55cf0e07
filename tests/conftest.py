"""Shared test setup.

Tests live in folders that mirror the packages (``tests/engine/audio/`` for ``engine/audio/``,
``tests/streaming/`` ...); their helpers stay in this folder (``formats``, ``rtc_util``,
``face_edits``, ``repo_paths``) and are imported by name: this folder is put on ``sys.path``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def demo_G():
    """The shipped demo generator, loaded once for the whole run (tests must not modify it)."""
    from engine.synthesis.checkpoints import load_generator
    return load_generator("demo")
