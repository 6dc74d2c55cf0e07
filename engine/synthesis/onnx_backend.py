"""An exported synthesis graph (``engine.synthesis.onnx_export``) on onnxruntime: the CPU
provider, or the CUDA provider where installed (inputs and outputs bound to torch CUDA tensors
with IO binding, no host copies). Graphs are exported on first use into the cache, keyed by the
generator's content hash."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from engine.synthesis.backend import BackendError, SynthesisBackend
from engine.synthesis.fingerprint import generator_hash
from engine.synthesis.onnx_export import export_synthesis, read_sidecar
from engine.synthesis.presets import cache_dir as default_cache

__all__ = ["OnnxRuntimeBackend", "onnx_for"]


class OnnxRuntimeBackend(SynthesisBackend):
    """An exported synthesis graph (``engine.synthesis.onnx_export``) on onnxruntime.

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


def onnx_for(G, max_batch: int, cache_dir: Optional[Path]) -> Path:
    """The exported graph of ``G`` in the cache (exported on first use)."""
    root = Path(cache_dir) if cache_dir is not None else Path(default_cache()) / "onnx"
    path = root / f"synthesis-{generator_hash(G)[:16]}-b{max_batch}.onnx"
    if not (path.is_file() and Path(os.fspath(path) + ".json").is_file()):
        export_synthesis(G, path, max_batch=max_batch)
    return path
