"""What the benchmarks share: FFHQ-shaped random-weight generators (the official NVlabs
stylegan2-ada-pytorch configurations; weights do not change the arithmetic, so timings hold for
trained networks of the same shape) and the environment record every result JSON carries."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import torch

from engine.synthesis.networks import Generator, GeneratorConfig

__all__ = ["REPO_ROOT", "ffhq_channel_base", "ffhq_shape_config", "build_random_generator", "cpu_model",
           "git_commit", "environment", "free_port", "wait_health", "child_server"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def ffhq_channel_base(resolution: int) -> int:
    """channel_base of the official NVlabs configuration for this resolution."""
    return 32768 if resolution >= 512 else 16384


def ffhq_shape_config(
    resolution: int,
    channel_base: int | None = None,
    channel_max: int = 512,
    z_dim: int = 512,
    mapping_layers: int = 8,
) -> GeneratorConfig:
    """FFHQ-style NVlabs configuration (random weights are enough for timing)."""
    return GeneratorConfig.nvlabs(
        z_dim=z_dim,
        w_dim=z_dim,
        img_resolution=resolution,
        channel_base=channel_base if channel_base is not None else ffhq_channel_base(resolution),
        channel_max=channel_max,
        mapping_layers=mapping_layers,
        conv_clamp=256,
    )


def build_random_generator(config: GeneratorConfig, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(config).eval().requires_grad_(False)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    return commit + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "num_threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
    }
    return env


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a server process to bind."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_health(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    """``GET /health`` of a server process starting at ``url``, once it answers (RuntimeError if it
    exits or does not come up in ``timeout`` s)."""
    t_end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < t_end:
            if proc.poll() is not None:
                said = proc.stderr.read() if proc.stderr is not None else ""
                raise RuntimeError(f"server exited with {proc.returncode}: {said}")
            try:
                async with http.get(url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    return await r.json()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.25)
    raise RuntimeError("server did not come up")


@contextlib.asynccontextmanager
async def child_server(cmd: list, port: int, *, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout: float = 120.0) -> AsyncIterator[tuple[str, subprocess.Popen, dict]]:
    """Run ``cmd`` (a server on 127.0.0.1:``port``) from the repository root: yields
    ``(url, proc, /health body)`` once ``/health`` answers; terminated (killed after 20 s) on the
    way out."""
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=stdout, stderr=stderr, text=stderr == subprocess.PIPE)
    try:
        health = await wait_health(url, proc, timeout=timeout)
        yield url, proc, health
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.asynccontextmanager
async def serve_process(server_args: list, log_path: Path, *, timeout: float = 180.0
                        ) -> AsyncIterator[tuple[str, subprocess.Popen]]:
    """``python -m engine.serve`` on a free 127.0.0.1 port, its output in ``log_path``: yields
    ``(url, proc)`` once ``/health`` answers; terminated (killed after 20 s) on the way out."""
    import sys

    port = free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:          # a pipe nobody reads would block the server once full
        cmd = [sys.executable, "-m", "engine.serve", "--port", str(port), "--log-level", "warning", *server_args]
        async with child_server(cmd, port, stdout=log, stderr=subprocess.STDOUT, timeout=timeout) as (url, proc, _):
            yield url, proc
