"""The standalone server's memory and threads under churn: worker threads all started with the
server (the count never grows), and each closed session's reference cycles collected at once
once the startup objects are frozen (in a child process: freezing is process-wide)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

from aiohttp import web

from streaming.workers import default_workers, started_pool, use_started_workers


def test_a_started_pool_has_all_its_threads_and_keeps_them():
    before = threading.active_count()
    pool = started_pool(3)
    try:
        assert threading.active_count() == before + 3
        gate = threading.Event()
        futures = [pool.submit(gate.wait, 5.0) for _ in range(10)]    # more work than threads
        time.sleep(0.1)
        assert threading.active_count() == before + 3
        gate.set()
        assert all(f.result(5.0) for f in futures)
        assert threading.active_count() == before + 3
    finally:
        pool.shutdown(wait=True)


def test_the_app_loop_gets_the_started_pool_before_anything_else():
    app = web.Application()
    seen = {}

    async def first_thing(_app):
        loop = asyncio.get_running_loop()
        seen["name"] = await loop.run_in_executor(None, lambda: threading.current_thread().name)

    app.on_startup.append(first_thing)
    use_started_workers(app, workers=2)

    async def main():
        runner = web.AppRunner(app)
        await runner.setup()
        await runner.cleanup()

    asyncio.run(main())
    assert seen["name"].startswith("stylecast-worker") and default_workers() >= 5


CHILD = r"""
import gc, sys
from engine.runtime import freeze_startup_objects, release_session_memory
class Node:
    def __init__(self): self.me = self
def garbage(n):
    for _ in range(n): Node()
gc.disable()                         # only release_session_memory collects here
garbage(1000)
print(release_session_memory())      # not frozen: the process's own schedule, no full collection
print(freeze_startup_objects() > 0)
garbage(1000)
print(release_session_memory())      # frozen: the cycles of what came later are collected
"""


def test_release_collects_session_cycles_only_in_a_frozen_server_process():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, check=True)
    lines = out.stdout.split()
    assert lines[0] == "0" and lines[1] == "True" and int(lines[2]) >= 1000, out
