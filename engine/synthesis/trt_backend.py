"""TensorRT runtime for a synthesis engine, bound to torch CUDA tensors.

No extra CUDA library (no pycuda, no cuda-python): inputs and outputs are torch tensors whose
device addresses are handed to TensorRT (``IExecutionContext.set_tensor_address``), and the engine
runs with ``execute_async_v3`` on torch's current CUDA stream, so it orders with the torch work
before and after it like any torch kernel.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional, Union

import torch

from engine.synthesis.backend import SynthesisBackend
from engine.synthesis.onnx_export import export_synthesis
from engine.synthesis.trt_engine import (
    MIN_PSNR_DB,
    EngineSpec,
    TRTBuildError,
    build_engine,
    engine_key,
    engine_paths,
    load_tensorrt,
    psnr,
    spec_for,
)

__all__ = ["TensorRTBackend", "torch_dtype", "ensure_engine", "check_engine"]


def torch_dtype(trt_dtype) -> torch.dtype:
    trt = load_tensorrt()
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if trt_dtype not in table:
        raise TRTBuildError(f"unsupported engine tensor type {trt_dtype}")
    return table[trt_dtype]


class TensorRTBackend(SynthesisBackend):
    """A deserialised engine (``engine.synthesis.trt_engine``); ws [B, num_ws, w_dim] → img [B, 3, H, W]
    (the engine's output type, float16 or float32) on the same CUDA device, 1 ≤ B ≤ max_batch."""

    name = "trt"

    def __init__(self, engine_path: Union[str, os.PathLike], spec: EngineSpec, *, device="cuda"):
        trt = load_tensorrt()
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


def ensure_engine(G, *, device="cuda", max_batch: int = 16, opt_batch: Optional[int] = None, precision: str = "fp16",
                  cache_dir: Optional[os.PathLike | str] = None, log=print) -> tuple[Path, EngineSpec, dict]:
    """The cached engine for ``G`` (built, checked and recorded on first use): (path, spec, record)."""
    spec = spec_for(G, device=device, max_batch=max_batch, opt_batch=opt_batch, precision=precision)
    paths = engine_paths(spec, cache_dir)
    if paths["engine"].is_file() and paths["record"].is_file():
        record = json.loads(paths["record"].read_text())
        if record.get("spec") == asdict(spec):
            log(f"trt: loading cached engine {paths['engine'].name}")
            return paths["engine"], spec, record
    if not (paths["onnx"].is_file() and Path(os.fspath(paths["onnx"]) + ".json").is_file()):
        log(f"trt: exporting ONNX to {paths['onnx']}")
        export_synthesis(G, paths["onnx"], max_batch=max_batch)
    log(f"trt: building a {precision} engine for batch 1..{max_batch} (minutes, once per GPU + checkpoint)")
    seconds = build_engine(paths["onnx"], spec, paths["engine"], timing_cache=paths["timing_cache"], log=log)
    backend = TensorRTBackend(paths["engine"], spec, device=device)
    check = check_engine(backend, G, device=device)
    record = {"spec": asdict(spec), "key": engine_key(spec), "build_s": round(seconds, 1), **check}
    if check["psnr_db"] < MIN_PSNR_DB:
        paths["engine"].unlink(missing_ok=True)
        raise TRTBuildError(f"the {precision} engine's output is too far from float32 torch: PSNR "
                            f"{check['psnr_db']:.1f} dB < {MIN_PSNR_DB} dB")
    tmp = paths["record"].with_name(paths["record"].name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, paths["record"])
    return paths["engine"], spec, record


def check_engine(backend, G, *, device="cuda", batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """PSNR (dB) and max |diff| of the engine's output against float32 torch on the same ws."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.z_dim, generator=gen).to(device)
    Gd = G.to(device).float()
    with torch.inference_mode():
        ws = Gd.mapping(z, truncation_psi=0.7)
        ref = Gd.synthesis(ws, noise_mode="const").float().cpu().numpy()
    out = backend(ws).float().cpu().numpy()
    return {"psnr_db": psnr(out, ref), "max_abs_diff": float(abs(out - ref).max()), "check_batch": batch}
