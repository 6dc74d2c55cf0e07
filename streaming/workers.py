"""The standalone server's worker threads, all started with it.

Everything the server hands to ``run_in_executor(None, ...)`` (engine and session start-up, the
stop of a session's stream thread, memory release after a session) and aiortc's video encoding
run on the event loop's default executor. asyncio creates that pool's threads lazily, one more
whenever every thread is busy, and keeps them: a server that idles with 4 threads leaves a long
churn with 5 or 6. :func:`use_started_workers` gives the loop a pool whose threads are all
started before the first client, so the thread count is the same idle, under load and after.
"""
from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from aiohttp import web

__all__ = ["use_started_workers", "default_workers"]

log = logging.getLogger("stylecast.server")


def default_workers() -> int:
    """The size Python gives a default executor: ``min(32, cores + 4)``."""
    return min(32, (os.cpu_count() or 1) + 4)


def started_pool(workers: int) -> ThreadPoolExecutor:
    """A ThreadPoolExecutor with all ``workers`` threads running (each holds a barrier until all are)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stylecast-worker")
    barrier = threading.Barrier(workers)
    try:
        list(pool.map(lambda _: barrier.wait(5.0), range(workers)))
    except threading.BrokenBarrierError:      # pragma: no cover - a thread that could not start in 5 s
        log.warning("only some of the %d worker threads started at once; the rest start when needed", workers)
    return pool


def use_started_workers(app: web.Application, workers: Optional[int] = None) -> None:
    """At the app's start (before anything else starts), make a pool of ``workers`` (default
    :func:`default_workers`) started threads the loop's default executor. For the process that
    is the server: an application that embeds it keeps its own loop's executor."""
    n = int(workers) if workers is not None else default_workers()

    async def start(_app: web.Application) -> None:
        asyncio.get_running_loop().set_default_executor(started_pool(n))

    app.on_startup.insert(0, start)
