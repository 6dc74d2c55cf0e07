"""engine.runtime.tune_cpu_allocator: freed activations are reused instead of page-faulted anew."""
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import resource, sys, torch
from engine.runtime import tune_cpu_allocator
tuned = tune_cpu_allocator() if sys.argv[1] == "tuned" else False
def faults_for_one_pass():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 1024 * 1024).fill_(1.0)   # 64 MiB, every page touched
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_for_one_pass()
print(tuned, min(faults_for_one_pass() for _ in range(3)))
"""


def probe(mode: str) -> tuple[bool, int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning only applies to glibc's malloc")
def test_tuned_allocator_reuses_freed_blocks():
    tuned, faults_tuned = probe("tuned")
    _, faults_default = probe("default")
    assert tuned
    pages = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    assert faults_default > pages // 2, "glibc's default should page-fault a fresh 64 MiB block each time"
    assert faults_tuned < pages // 20, f"tuned allocator still faulted {faults_tuned} pages"
