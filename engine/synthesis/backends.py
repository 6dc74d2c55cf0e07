"""Synthesis backends: ws [B, num_ws, w_dim] in, images [B, 3, H, W] in [-1, 1] out.

One interface, :class:`SynthesisBackend` (a callable), three implementations:

* :class:`TorchBackend` — the PyTorch generator. CPU float32 / bfloat16; CUDA float16 with
  channels_last, optional ``torch.compile`` and CUDA-graph capture per batch size (fixed shapes:
  the input is copied into a static buffer and the captured graph replayed).
* :class:`OnnxRuntimeBackend` — an exported ONNX graph (``trt_build.export``) on onnxruntime's
  CPU provider, or its CUDA provider where installed (inputs and outputs bound to torch CUDA
  tensors with IO binding, no host copies).
* ``tensorrt`` — :class:`trt_build.runtime.TensorRTBackend`, a TensorRT FP16 engine bound to torch
  CUDA tensors (``set_tensor_address`` + ``execute_async_v3`` on torch's current stream).

:func:`create_backend` picks one by name; ``"auto"`` takes the fastest available and says which
(TensorRT, else torch float16 on CUDA; on a CPU it times torch and onnxruntime on a few frames
and keeps the faster).

Outputs are float32 on the CPU, and float32 (or float16 from the float16 backends) on CUDA; the
conversion to uint8 happens once, at the sink. Every backend accepts any batch from 1 to its
``max_batch`` (``None``: unbounded) and refuses other shapes with a ValueError.
"""
from __future__ import annotations

import copy
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch

__all__ = ["SynthesisBackend", "TorchBackend", "OnnxRuntimeBackend", "create_backend", "available_backends",
           "BACKEND_NAMES", "BackendError"]

BACKEND_NAMES = ("auto", "torch", "onnx", "trt")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class BackendError(RuntimeError):
    """A backend cannot be created or run here (one-line message saying why)."""


class SynthesisBackend(ABC):
    """ws [B, num_ws, w_dim] (torch tensor, any device/dtype) → img [B, 3, H, W] in [-1, 1]."""

    name: str = "?"
    device: torch.device
    num_ws: int
    w_dim: int
    img_resolution: int
    max_batch: Optional[int] = None

    def _check(self, ws: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(ws):
            ws = torch.as_tensor(np.asarray(ws, dtype=np.float32))
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if ws.shape[0] < 1 or (self.max_batch is not None and ws.shape[0] > self.max_batch):
            raise ValueError(f"batch {ws.shape[0]} is outside 1..{self.max_batch or 'any'} for the {self.name} backend")
        return ws

    @abstractmethod
    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        ...

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "device": str(self.device), "resolution": self.img_resolution,
                "max_batch": self.max_batch}

    def close(self) -> None:
        pass


class TorchBackend(SynthesisBackend):
    """The PyTorch generator's synthesis network.

    Args:
        G: the generator (not modified: a copy is made when the dtype, device or memory format
            changes).
        device: ``cpu`` or ``cuda[:N]``.
        dtype: ``float32`` (default), ``bfloat16`` (CPU or CUDA) or ``float16`` (CUDA only).
        channels_last: NHWC activations (default: on for CUDA float16/bfloat16).
        compile: wrap the synthesis in ``torch.compile`` (first calls are slow).
        cuda_graphs: capture one CUDA graph per batch size and replay it (CUDA only).
        noise_mode: ``const`` (default; the engine's convention) or ``none``.
    """

    name = "torch"

    def __init__(self, G, *, device: Union[str, torch.device] = "cpu", dtype: str = "float32",
                 channels_last: Optional[bool] = None, compile: bool = False, cuda_graphs: bool = False,
                 noise_mode: str = "const", max_batch: Optional[int] = None):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise BackendError("CUDA is not available")
        if dtype == "float16" and not cuda:
            raise BackendError("float16 synthesis needs CUDA (use float32 or bfloat16 on a CPU)")
        if cuda_graphs and not cuda:
            raise BackendError("CUDA graphs need a CUDA device")
        if noise_mode not in ("const", "none"):
            raise ValueError(f"noise_mode must be 'const' or 'none', got {noise_mode!r}")
        self.dtype_name = dtype
        self.dtype = _DTYPES[dtype]
        self.channels_last = bool(cuda and dtype != "float32") if channels_last is None else bool(channels_last)
        src_device = G.mapping.w_avg.device
        src_dtype = next(G.synthesis.parameters()).dtype
        if src_device != self.device or src_dtype != self.dtype or self.channels_last:
            G = copy.deepcopy(G)
        G = G.to(self.device)
        if self.dtype != torch.float32:
            G = G.to(self.dtype)
        if self.channels_last and hasattr(G, "set_channels_last"):
            G.set_channels_last()
        G.eval().requires_grad_(False)
        self.G = G
        self.num_ws, self.w_dim, self.img_resolution = int(G.num_ws), int(G.w_dim), int(G.img_resolution)
        self.noise_mode = noise_mode
        self.max_batch = max_batch
        self.compiled = bool(compile)
        fn = lambda ws: self.G.synthesis(ws, noise_mode=self.noise_mode)  # noqa: E731
        self._fn: Callable = torch.compile(fn, dynamic=False) if compile else fn
        self.cuda_graphs = bool(cuda_graphs)
        self._graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, batch: int):
        static_in = torch.zeros(batch, self.num_ws, self.w_dim, device=self.device, dtype=torch.float32)
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):                       # warm-up: cuDNN algorithm choice, allocator
                self._fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self._fn(static_in)
        self._graphs[batch] = (graph, static_in, static_out)
        return self._graphs[batch]

    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        ws = self._check(ws).to(self.device, torch.float32, non_blocking=True)
        if self.cuda_graphs:
            entry = self._graphs.get(int(ws.shape[0])) or self._capture(int(ws.shape[0]))
            graph, static_in, static_out = entry
            static_in.copy_(ws)
            graph.replay()
            return static_out.clone()
        with torch.inference_mode():
            img = self._fn(ws)
        return img if self.device.type == "cuda" else img.float()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dtype": self.dtype_name, "channels_last": self.channels_last,
                "compile": self.compiled, "cuda_graphs": self.cuda_graphs}


class OnnxRuntimeBackend(SynthesisBackend):
    """An exported synthesis graph (``trt_build.export``) on onnxruntime.

    Args:
        onnx_path: the .onnx file (its JSON export record gives shapes and max batch).
        device: ``cpu`` (CPUExecutionProvider) or ``cuda[:N]`` (CUDAExecutionProvider, with IO
            binding to torch CUDA tensors).
        threads: intra-op threads for the CPU provider (default: onnxruntime's).
    """

    name = "onnx"

    def __init__(self, onnx_path: Union[str, os.PathLike], *, device: Union[str, torch.device] = "cpu",
                 threads: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed (pip install 'stylecast[onnx]')") from None
        from trt_build.export import read_sidecar

        self.path = Path(onnx_path)
        meta = read_sidecar(self.path)
        self.meta = meta
        self.num_ws, self.w_dim, self.img_resolution = int(meta["num_ws"]), int(meta["w_dim"]), int(meta["img_resolution"])
        self.max_batch = int(meta["max_batch"])
        self.device = torch.device(device)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError("onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(os.fspath(self.path), opts, providers=providers)
        self._in = self.session.get_inputs()[0].name
        self._out = self.session.get_outputs()[0].name

    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        ws = self._check(ws)
        if self.device.type != "cuda":
            x = ws.detach().to("cpu", torch.float32).contiguous().numpy()
            return torch.from_numpy(self.session.run([self._out], {self._in: x})[0])
        ws = ws.detach().to(self.device, torch.float32).contiguous()
        out = torch.empty(ws.shape[0], 3, self.img_resolution, self.img_resolution, device=self.device)
        binding = self.session.io_binding()
        idx = self.device.index or 0
        binding.bind_input(self._in, "cuda", idx, np.float32, list(ws.shape), ws.data_ptr())
        binding.bind_output(self._out, "cuda", idx, np.float32, list(out.shape), out.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "onnx": os.fspath(self.path),
                "providers": self.session.get_providers()}


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


def _onnx_for(G, max_batch: int, cache_dir: Optional[Path]) -> Path:
    """The exported graph of ``G`` in the cache (exported on first use)."""
    from engine.latent.basis import generator_hash
    from engine.synthesis.presets import cache_dir as default_cache
    from trt_build.export import export_synthesis

    root = Path(cache_dir) if cache_dir is not None else Path(default_cache()) / "onnx"
    path = root / f"synthesis-{generator_hash(G)[:16]}-b{max_batch}.onnx"
    if not (path.is_file() and Path(os.fspath(path) + ".json").is_file()):
        export_synthesis(G, path, max_batch=max_batch)
    return path


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
        from trt_build.runtime import TensorRTBackend
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
        return OnnxRuntimeBackend(_onnx_for(G, max_batch, cache_dir), device=device)
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
        onnx_b = OnnxRuntimeBackend(_onnx_for(G, max_batch, cache_dir), device=device)
    except Exception as exc:
        say(f"backend auto: torch float32 (onnx export failed: {type(exc).__name__}: {exc})")
        return torch_b
    ws = G.mapping(torch.zeros(1, G.z_dim, device=G.mapping.w_avg.device)).float()
    t_torch, t_onnx = _time_backend(torch_b, ws), _time_backend(onnx_b, ws)
    best = onnx_b if t_onnx < t_torch else torch_b
    say(f"backend auto: {best.name} (torch {1e3 * t_torch:.1f} ms, onnxruntime {1e3 * t_onnx:.1f} ms per frame)")
    return best
