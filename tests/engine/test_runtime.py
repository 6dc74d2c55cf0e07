"""engine.runtime.tune_cpu_allocator: a steady synthesis loop stops page-faulting its activations."""
import os
import platform
import subprocess
import sys

import pytest
from repo_paths import REPO


PROBE = r"""
import resource, sys, torch
from engine.runtime import tune_cpu_allocator
from engine.synthesis.networks import Generator, GeneratorConfig
tuned = tune_cpu_allocator() if sys.argv[1] == "tuned" else False
G = Generator(GeneratorConfig.nvlabs(z_dim=32, w_dim=32, img_resolution=256, channel_base=4096,
                                     channel_max=64, mapping_layers=2))
ws = G.mapping(torch.randn(2, 32))
def faults_for_one_pass():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.inference_mode():
        G.synthesis(ws)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_for_one_pass(); faults_for_one_pass()   # warm-up: first touches are expected
steady = sum(faults_for_one_pass() for _ in range(5))
# Control: touching 64 MiB of fresh anonymous memory must page-fault wherever faults are counted.
import mmap
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = mmap.mmap(-1, 64 << 20)
for offset in range(0, 64 << 20, 4096):
    block[offset] = 1
control = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(tuned, steady, control)
"""


def probe(mode: str) -> tuple[bool, int, int]:
    # glibc's own defaults: no malloc tunables inherited from whoever runs the tests
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning only applies to glibc's malloc")
def test_tuned_allocator_reuses_freed_activations():
    tuned, faults_tuned, control = probe("tuned")
    if control < 1000:
        pytest.skip(f"this kernel does not count minor page faults (touching 16384 fresh pages counted {control})")
    untuned, faults_default, _ = probe("default")
    assert tuned and not untuned
    # 256 px x 32 channels x batch 2 float32 is 16 MiB per activation: glibc maps such blocks
    # fresh on every pass by default.
    assert faults_default > 1000, f"expected glibc's default to page-fault activations ({faults_default})"
    assert faults_tuned * 10 < faults_default, f"tuned: {faults_tuned} faults vs {faults_default} by default"


@pytest.mark.parametrize("cores, want", [(None, 1), (1, 1), (2, 1), (4, 1), (5, 2), (8, 4), (12, 6), (16, 8),
                                         (64, 8)])
def test_default_threads(monkeypatch, cores, want):
    import engine.runtime as runtime

    monkeypatch.setattr(runtime.os, "cpu_count", lambda: cores)
    assert runtime.default_threads() == want


def test_set_threads_explicit_wins_and_cuda_keeps_torchs_default(monkeypatch):
    import torch

    import engine.runtime as runtime

    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "default_threads", lambda: 3)
    try:
        assert runtime.set_threads(None, "cpu") == 3 and torch.get_num_threads() == 3
        torch.set_num_threads(2)
        assert runtime.set_threads(None, torch.device("cuda:0")) is None and torch.get_num_threads() == 2
        assert runtime.set_threads(1, "cuda") == 1 and torch.get_num_threads() == 1
        assert runtime.set_threads(2, "cpu") == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_limit_malloc_arenas_is_set_once_on_glibc():
    import platform

    from engine import runtime

    first = runtime.limit_malloc_arenas()
    assert runtime.limit_malloc_arenas() is first                # idempotent
    assert first == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
