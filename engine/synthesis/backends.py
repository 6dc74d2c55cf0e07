"""Synthesis backends by name: :func:`create_backend` and :func:`available_backends`.

One interface, :class:`~engine.synthesis.backend.SynthesisBackend` (a callable), three
implementations, each in its own module:

* ``torch`` — :class:`~engine.synthesis.torch_backend.TorchBackend`, the PyTorch generator
  (CPU float32 / bfloat16; CUDA float16 with channels_last, ``torch.compile``, CUDA graphs).
* ``onnx`` — :class:`~engine.synthesis.onnx_backend.OnnxRuntimeBackend`, the exported graph on
  onnxruntime (CPU, or CUDA with IO binding).
* ``trt`` — :class:`~engine.synthesis.trt_backend.TensorRTBackend`, a TensorRT FP16 engine
  (built and cached by ``engine.synthesis.trt_engine``) bound to torch CUDA tensors.

``"auto"`` takes the fastest available and says which (TensorRT, else torch float16 on CUDA; on a
CPU it times torch and onnxruntime on a few frames and keeps the faster).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from engine.synthesis.backend import BackendError, SynthesisBackend
from engine.synthesis.onnx_backend import OnnxRuntimeBackend, onnx_for
from engine.synthesis.torch_backend import TorchBackend

__all__ = ["SynthesisBackend", "TorchBackend", "OnnxRuntimeBackend", "create_backend", "available_backends",
           "BACKEND_NAMES", "BackendError"]

BACKEND_NAMES = ("auto", "torch", "onnx", "trt")


def available_backends(device: Union[str, torch.device] = "cpu") -> dict[str, str]:
    """name → "" when usable on ``device``, else the reason it is not."""
    device = torch.device(device)
    out = {"torch": ""}
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401  (the exporter)
        if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            out["onnx"] = "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
        else:
            out["onnx"] = ""
    except ImportError:
        out["onnx"] = "onnxruntime / onnxscript not installed (pip install 'stylecast[onnx]')"
    if device.type != "cuda":
        out["trt"] = "TensorRT needs a CUDA GPU"
    else:
        try:
            import tensorrt  # noqa: F401
            out["trt"] = ""
        except ImportError:
            out["trt"] = "tensorrt is not installed (pip install 'stylecast[trt]')"
    return out


def _time_backend(backend: SynthesisBackend, ws: torch.Tensor, n: int = 7) -> float:
    for _ in range(3):                                   # warm-up: allocator, lazy init
        backend(ws)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = backend(ws)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _trt_backend_class():
    try:
        from engine.synthesis.trt_backend import TensorRTBackend
    except ImportError as exc:
        raise BackendError(f"the TensorRT runtime is not available: {exc}") from None
    return TensorRTBackend


def create_backend(name: str, G, *, device: Union[str, torch.device] = "cpu", dtype: Optional[str] = None,
                   max_batch: int = 16, cache_dir: Optional[Union[str, Path]] = None,
                   log: Optional[Callable[[str], None]] = None, **torch_kwargs) -> SynthesisBackend:
    """A backend by name (``auto|torch|onnx|trt``) for generator ``G`` on ``device``.

    ``auto``: on CUDA, TensorRT when installed, else torch float16 (channels_last); on a CPU,
    torch float32 and onnxruntime are timed on a batch of 1 and the faster is kept. ``log``
    receives one line saying what was chosen and why. BackendError when the named backend cannot
    run here.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {', '.join(BACKEND_NAMES)}, got {name!r}")
    device = torch.device(device)
    say = log or (lambda msg: None)
    avail = available_backends(device)
    if name not in ("auto",) and avail.get(name):
        raise BackendError(f"backend {name!r} is not available: {avail[name]}")
    if name == "torch":
        return TorchBackend(G, device=device, dtype=dtype or ("float16" if device.type == "cuda" else "float32"),
                            **torch_kwargs)
    if name == "onnx":
        return OnnxRuntimeBackend(onnx_for(G, max_batch, cache_dir), device=device)
    if name == "trt":
        TensorRTBackend = _trt_backend_class()
        return TensorRTBackend.for_generator(G, device=device, max_batch=max_batch, cache_dir=cache_dir)
    # auto
    if device.type == "cuda":
        if not avail["trt"]:
            try:
                TensorRTBackend = _trt_backend_class()
                b = TensorRTBackend.for_generator(G, device=device, max_batch=max_batch, cache_dir=cache_dir)
                say("backend auto: tensorrt (FP16 engine)")
                return b
            except Exception as exc:  # build failures fall back to torch, said aloud
                say(f"backend auto: tensorrt failed ({type(exc).__name__}: {exc}); using torch float16")
        else:
            say(f"backend auto: torch float16 channels_last (tensorrt: {avail['trt']})")
        return TorchBackend(G, device=device, dtype=dtype or "float16", **torch_kwargs)
    torch_b = TorchBackend(G, device=device, dtype=dtype or "float32", **torch_kwargs)
    if avail["onnx"]:
        say(f"backend auto: torch float32 (onnx: {avail['onnx']})")
        return torch_b
    try:
        onnx_b = OnnxRuntimeBackend(onnx_for(G, max_batch, cache_dir), device=device)
    except Exception as exc:
        say(f"backend auto: torch float32 (onnx export failed: {type(exc).__name__}: {exc})")
        return torch_b
    ws = G.mapping(torch.zeros(1, G.z_dim, device=G.mapping.w_avg.device)).float()
    t_torch, t_onnx = _time_backend(torch_b, ws), _time_backend(onnx_b, ws)
    best = onnx_b if t_onnx < t_torch else torch_b
    say(f"backend auto: {best.name} (torch {1e3 * t_torch:.1f} ms, onnxruntime {1e3 * t_onnx:.1f} ms per frame)")
    return best
