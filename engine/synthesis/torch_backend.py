"""The PyTorch generator as a synthesis backend: CPU float32 / bfloat16; CUDA float16 with
channels_last, optional ``torch.compile`` and CUDA-graph capture per batch size (fixed shapes: the
input is copied into a static buffer and the captured graph replayed)."""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

import torch

from engine.synthesis.backend import BackendError, SynthesisBackend

__all__ = ["TorchBackend", "DTYPES"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
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
        self.dtype = DTYPES[dtype]
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
