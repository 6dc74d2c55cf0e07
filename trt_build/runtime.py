"""TensorRT runtime for a synthesis engine, bound to torch CUDA tensors.

No extra CUDA library (no pycuda, no cuda-python): inputs and outputs are torch tensors whose
device addresses are handed to TensorRT (``IExecutionContext.set_tensor_address``), and the engine
runs with ``execute_async_v3`` on torch's current CUDA stream, so it orders with the torch work
before and after it like any torch kernel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from engine.synthesis.backends import SynthesisBackend

from .build import EngineSpec, TRTBuildError, _trt, ensure_engine

__all__ = ["TensorRTBackend", "torch_dtype"]


def torch_dtype(trt_dtype) -> torch.dtype:
    trt = _trt()
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if trt_dtype not in table:
        raise TRTBuildError(f"unsupported engine tensor type {trt_dtype}")
    return table[trt_dtype]


class TensorRTBackend(SynthesisBackend):
    """A deserialised engine (``trt_build.build``); ws [B, num_ws, w_dim] → img [B, 3, H, W]
    (the engine's output type, float16 or float32) on the same CUDA device, 1 ≤ B ≤ max_batch."""

    name = "trt"

    def __init__(self, engine_path: Union[str, os.PathLike], spec: EngineSpec, *, device="cuda"):
        trt = _trt()
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise TRTBuildError("TensorRT engines run on CUDA devices only")
        self.spec = spec
        self.num_ws, self.w_dim, self.img_resolution = spec.num_ws, spec.w_dim, spec.img_resolution
        self.max_batch = spec.max_batch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
            if self.engine is None:
                raise TRTBuildError(f"{engine_path}: TensorRT could not deserialise the engine (stale or corrupt)")
            self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self._in = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self._out = next(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self._in_dtype = torch_dtype(self.engine.get_tensor_dtype(self._in))
        self._out_dtype = torch_dtype(self.engine.get_tensor_dtype(self._out))

    @classmethod
    def for_generator(cls, G, *, device="cuda", max_batch: int = 16, cache_dir=None, precision: str = "fp16",
                      log=print) -> "TensorRTBackend":
        """Load the cached engine for ``G`` (building it on first use, see ``ensure_engine``)."""
        path, spec, _ = ensure_engine(G, device=device, max_batch=max_batch, precision=precision,
                                      cache_dir=cache_dir, log=log)
        return cls(path, spec, device=device)

    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        ws = self._check(ws).to(self.device, self._in_dtype).contiguous()
        b = int(ws.shape[0])
        if not self.context.set_input_shape(self._in, tuple(ws.shape)):
            raise ValueError(f"the engine refuses input shape {list(ws.shape)}")
        out = torch.empty(b, 3, self.img_resolution, self.img_resolution, device=self.device, dtype=self._out_dtype)
        self.context.set_tensor_address(self._in, ws.data_ptr())
        self.context.set_tensor_address(self._out, out.data_ptr())
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "precision": self.spec.precision, "trt_version": self.spec.trt_version,
                "gpu": self.spec.gpu_name}
