"""Process-level settings for running synthesis on a CPU."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import platform
from typing import Optional

_tuned: bool | None = None


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity; the machine's count elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _glibc() -> Optional[ctypes.CDLL]:
    """glibc, loaded once (``find_library`` runs ``ldconfig``), or None where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _glibc_mallopt():
    """glibc's ``mallopt``, or None where the C library is not glibc."""
    return getattr(_glibc(), "mallopt", None)


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks in the heap instead of returning them to the OS (glibc only).

    glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and unmaps them on
    free, so every synthesis pass page-faults (and zero-fills) its large activations again. On a
    2-core VM that measured about 35% of a 512 px CPU frame (``python -m benchmarks.synthesis``
    with and without ``--no-malloc-tuning``). The price is a resident set that stays at its peak.
    Idempotent; returns False (and changes nothing) where the C library is not glibc.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    ok = mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    ok &= mallopt(M_TOP_PAD, 1 << 28) == 1
    _tuned = bool(ok)
    return _tuned


_arenas: Optional[bool] = None


def limit_malloc_arenas(n: Optional[int] = None) -> bool:
    """Cap glibc's malloc arenas (its default: 8 per core) at ``n`` (default max(2, cores)).

    A server starts many short-lived threads (a worker per session, executor and codec threads);
    each can leave freed memory in an arena of its own that glibc rarely returns, so the resident
    set climbs with every session that comes and goes. Measured with ``python -m benchmarks.soak``
    on the 2-core VM: +17 MiB per 10 min over the first 10 minutes with the default arenas; with
    this call the process keeps one secondary heap for 30 minutes of churn (the soak counts them),
    and the whole server grew 5.1 MiB per 10 min (docs/benchmarks.md). Call it at startup, before
    the threads exist. Idempotent; False where libc is not glibc.
    """
    global _arenas
    if _arenas is not None:
        return _arenas
    _arenas = False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    M_ARENA_MAX = -8
    count = int(n) if n is not None else max(2, usable_cores())
    _arenas = mallopt(M_ARENA_MAX, count) == 1
    return _arenas


def freeze_startup_objects() -> int:
    """Collect, then move every object alive now (modules, the engine, its weights) out of the
    garbage collector's reach (``gc.freeze()``); returns how many were frozen.

    A server calls it once it is ready. Until then the oldest generation holds some 200,000
    objects, and CPython collects it only when a quarter as many new survivors have piled up:
    the reference cycles every closed WebRTC session leaves (aiortc / asyncio objects, about
    3,000 a session, holding frames and buffers) then wait there for dozens of sessions, and the
    resident set climbs by megabytes (measured: 38,639 such objects after 12 sessions, 12 MiB of
    RSS given back by one collection). Frozen, the oldest generation holds only what came later,
    so :func:`release_session_memory` collects it in milliseconds (1 ms after 12 sessions).

    For a process that is the server (``engine.serve``): an application that embeds the server
    keeps its own objects collectable and does not call it.
    """
    global _frozen
    gc.collect()
    gc.freeze()
    _frozen = True
    return gc.get_freeze_count()


_frozen = False


def release_session_memory() -> int:
    """After a session has gone: collect its reference cycles (all generations) when the startup
    objects are frozen (:func:`freeze_startup_objects`: then it takes milliseconds; otherwise a
    full collection walks every object of the process, and CPython's own schedule is left alone),
    then hand the freed pages back to the OS (:func:`trim_malloc`). Returns the objects collected.
    Runs on a worker thread."""
    n = gc.collect() if _frozen else 0
    trim_malloc()
    return n


def trim_malloc() -> bool:
    """Hand the free pages of every malloc arena back to the OS (glibc's ``malloc_trim(0)``).

    Called by the server when a session has gone: the arenas its threads used keep their freed
    memory otherwise, and :func:`tune_cpu_allocator` turns the automatic trim off. The next
    synthesis pass faults the pages it needs in again, once. False where libc is not glibc.
    """
    trim = getattr(_glibc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


def default_threads() -> int:
    """torch intra-op threads a session should use on a CPU: 1 on machines with up to 4 cores
    (on a small machine shared with other work a second OpenMP thread that waits on a busy core
    costs more than it brings; see the README's thread measurement), else ``min(8, cores // 2)``."""
    cores = os.cpu_count() or 1
    return 1 if cores <= 4 else min(8, cores // 2)


def set_threads(threads: Optional[int], device="cpu") -> Optional[int]:
    """Set torch's intra-op thread count once at startup: ``threads`` when given (an explicit
    ``--threads N`` wins), else :func:`default_threads` on a CPU device; on a CUDA device without
    ``threads`` torch's default is left alone. Returns the count set (None: left alone)."""
    import torch

    if threads is None:
        if torch.device(device).type != "cpu":
            return None
        threads = default_threads()
    torch.set_num_threads(int(threads))
    return int(threads)
