"""benchmarks.soak end to end, shortened: a real server process, a long stream, churning clients
(one closes, one vanishes); the report is written and the server is idle again at the end."""
from __future__ import annotations

import json

from benchmarks import soak


def test_short_soak_leaves_the_server_idle(tmp_path):
    out = tmp_path / "soak.json"
    assert soak.main(["--minutes", "0.6", "--warmup", "0", "--churn-seconds", "6", "--every", "2",
                      "--settle", "10", "--out", str(out), "--", "--no-admission"]) == 0   # a busy CI box must not refuse the churner
    report = json.loads(out.read_text())
    assert report["benchmark"] == "soak" and len(report["samples"]) >= 10
    assert report["churn"]["admitted"] >= 2 and report["churn"]["closed"] >= 1 and report["churn"]["vanished"] >= 1
    base, end = report["baseline"], report["end"]
    assert end["sessions"] == 0                              # the vanished client was freed too
    assert end["fds"] <= base["fds"] + 2 and end["threads"] <= base["threads"] + 3, (base, end)
    assert 2 <= max(s["sessions"] for s in report["samples"]) <= 3   # a vanished one lingers until its watchdog
    assert report["long_fps_median"] > 10                    # frames flowed the whole time


def test_memory_by_kind_adds_up_to_the_rss_and_sees_a_large_allocation():
    import mmap
    import os

    from benchmarks.soak import memory_by_kind, proc_sample

    before = memory_by_kind(os.getpid())
    assert abs(sum(before.values()) - proc_sample(os.getpid())["rss_mib"]) < 0.05 * proc_sample(os.getpid())["rss_mib"]
    # 48 MiB of a new anonymous mapping, every page touched (malloc could reuse freed heap instead);
    # not 64 MiB: a 64 MiB mapping that the kernel places 64 MiB-aligned has the shape of a glibc arena
    block = mmap.mmap(-1, 48 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block.write(b"\1" * (48 << 20))
    after = memory_by_kind(os.getpid())
    block.close()
    assert after["anon"] - before["anon"] > 45, (before, after)
