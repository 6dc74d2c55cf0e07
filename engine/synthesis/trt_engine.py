"""TensorRT FP16 engines for the synthesis network (the CLI: ``python -m trt_build.build``).

Pipeline: the ONNX graph of ``engine.synthesis.onnx_export`` (dynamic batch) → TensorRT's ONNX parser → an
engine built with FP16 enabled, one optimisation profile for batch 1 … ``max_batch`` (optimised
for ``opt_batch``), a persistent timing cache, and the normalisation arithmetic kept in float32
(every layer whose outputs are not 4-D feature maps: the styles and the weight demodulation,
Σ (s·w)² reaches ~10⁵ and overflows FP16; activations themselves are clamped to ±conv_clamp inside the graph
as StyleGAN2 does, which is what keeps FP16 finite). The engine is then run once against the
float32 torch output and its PSNR checked.

Engines live in a cache keyed by everything that makes an engine valid:
``sha256(generator hash, resolution, num_ws, w_dim, max_batch, opt_batch, precision, TensorRT
version, GPU name, compute capability)``, so a server's second start loads the engine in
seconds, and a changed checkpoint, GPU or TensorRT version can never load a stale one. Each
engine has a JSON record next to it (the key's parts, build time, PSNR).

Everything here up to the build itself (paths, keys, profiles, records) runs without TensorRT
and is tested on CPU; the build needs ``tensorrt`` and a CUDA GPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from engine.synthesis.fingerprint import generator_hash
from engine.synthesis.presets import cache_dir as default_cache

__all__ = ["EngineSpec", "engine_key", "engine_paths", "profile_shapes", "build_engine",
           "psnr", "TRTBuildError", "keep_in_fp32", "trt_cache_dir", "spec_for", "MIN_PSNR_DB", "load_tensorrt"]

MIN_PSNR_DB = 30.0


def keep_in_fp32(output_ranks: Sequence[int]) -> bool:
    """Whether a layer runs in float32 inside an FP16 engine: yes unless one of its outputs is a
    4-D [B, C, H, W] feature map. The per-sample style and demodulation arithmetic ([B, C] and
    [C_out, C_in] tensors: s = affine(w), d = rsqrt(s² · Σ_k W² + ε)) is tiny but needs float32's
    range (its sums reach ~10⁵ > FP16's 65504); convolutions, activations, up-sampling and the
    skip images are 4-D and run in FP16, clamped to ±conv_clamp inside the graph."""
    return all(int(r) < 4 for r in output_ranks)


class TRTBuildError(RuntimeError):
    """An engine cannot be built or loaded (one-line message)."""


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is built for; its :func:`engine_key` names the cached file."""
    generator_hash: str
    img_resolution: int
    num_ws: int
    w_dim: int
    max_batch: int
    opt_batch: int
    precision: str              # "fp16" | "fp32"
    trt_version: str
    gpu_name: str
    compute_capability: str     # "9.0"

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got {self.opt_batch} / {self.max_batch}")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be fp16 or fp32, got {self.precision!r}")


def engine_key(spec: EngineSpec) -> str:
    """sha256 hex (first 24 digits) of the spec's fields as canonical JSON."""
    blob = json.dumps(asdict(spec), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def trt_cache_dir(cache_dir: Optional[os.PathLike | str] = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(default_cache()) / "trt"


def engine_paths(spec: EngineSpec, cache_dir: Optional[os.PathLike | str] = None) -> dict[str, Path]:
    """``engine`` (.plan), ``record`` (.json), ``onnx`` (the graph it is built from) and
    ``timing_cache`` (shared by all engines on this GPU + TensorRT version)."""
    root = trt_cache_dir(cache_dir)
    key = engine_key(spec)
    stem = f"synthesis-{spec.img_resolution}px-b{spec.max_batch}-{spec.precision}-{key}"
    gpu = hashlib.sha256(f"{spec.gpu_name}|{spec.compute_capability}|{spec.trt_version}".encode()).hexdigest()[:16]
    return {"engine": root / f"{stem}.plan", "record": root / f"{stem}.json",
            "onnx": root / f"synthesis-{spec.generator_hash[:16]}-b{spec.max_batch}.onnx",
            "timing_cache": root / f"timing-{gpu}.cache"}


def profile_shapes(spec: EngineSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes of the ``ws`` input for the optimisation profile."""
    shape = lambda b: (int(b), spec.num_ws, spec.w_dim)  # noqa: E731
    return shape(1), shape(spec.opt_batch), shape(spec.max_batch)


def psnr(a, b, peak_to_peak: float = 2.0) -> float:
    """PSNR in dB of two images in [-1, 1] (peak-to-peak 2); inf when equal."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(peak_to_peak ** 2 / mse))


def load_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise TRTBuildError("tensorrt is not installed (pip install 'stylecast[trt]' on a machine with an NVIDIA GPU)") from None
    return trt


def spec_for(G, *, device, max_batch: int = 16, opt_batch: Optional[int] = None, precision: str = "fp16") -> EngineSpec:
    """The EngineSpec of generator ``G`` on CUDA ``device`` with the installed TensorRT."""
    trt = load_tensorrt()
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise TRTBuildError("TensorRT engines need a CUDA GPU")
    props = torch.cuda.get_device_properties(device)
    return EngineSpec(generator_hash=generator_hash(G), img_resolution=int(G.img_resolution), num_ws=int(G.num_ws),
                      w_dim=int(G.w_dim), max_batch=int(max_batch), opt_batch=int(opt_batch or min(4, max_batch)),
                      precision=precision, trt_version=trt.__version__, gpu_name=props.name,
                      compute_capability=f"{props.major}.{props.minor}")


def build_engine(onnx_path: os.PathLike | str, spec: EngineSpec, out: os.PathLike | str, *,
                 timing_cache: Optional[os.PathLike | str] = None, workspace_gb: float = 4.0,
                 log=print) -> float:
    """Parse ``onnx_path``, build the engine for ``spec`` and write it to ``out`` (atomically);
    returns the build time in seconds. The timing cache is read and updated when given."""
    trt = load_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)                       # explicit batch (the only mode in TensorRT 10)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TRTBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if spec.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        kept = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            ranks = [len(layer.get_output(j).shape) for j in range(layer.num_outputs)]
            if keep_in_fp32(ranks) and all(layer.get_output(j).dtype in (trt.float32, trt.float16)
                                           for j in range(layer.num_outputs)):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
                kept += 1
        log(f"trt: {kept} of {network.num_layers} layers kept in float32 (style and demodulation arithmetic)")
    profile = builder.create_optimization_profile()
    lo, opt, hi = profile_shapes(spec)
    profile.set_shape(network.get_input(0).name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if plan is None:
        raise TRTBuildError("TensorRT could not build the engine (see the TensorRT log above)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(plan))
    os.replace(tmp, out)
    if timing_cache is not None:
        tc = Path(timing_cache)
        tmp = tc.with_name(tc.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(memoryview(cache.serialize()))
        os.replace(tmp, tc)
    return seconds
