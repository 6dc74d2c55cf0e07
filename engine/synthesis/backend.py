"""The synthesis backend interface: ws [B, num_ws, w_dim] in, images [B, 3, H, W] in [-1, 1] out.

Implementations: :class:`~engine.synthesis.torch_backend.TorchBackend`,
:class:`~engine.synthesis.onnx_backend.OnnxRuntimeBackend`,
:class:`~engine.synthesis.trt_backend.TensorRTBackend`; :func:`engine.synthesis.backends.create_backend`
picks one. Outputs are float32 on the CPU, and float32 (or float16 from the float16 backends) on
CUDA; the conversion to uint8 happens once, at the sink (``engine.frames``). Every backend
accepts any batch from 1 to its ``max_batch`` (``None``: unbounded) and refuses other shapes with
a ValueError.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import numpy as np
import torch

__all__ = ["SynthesisBackend", "BackendError"]


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
