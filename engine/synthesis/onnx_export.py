"""ONNX export of the synthesis network (the CLI: ``python -m trt_build.export``).

The graph maps ws [batch, num_ws, w_dim] float32 → img [batch, 3, H, W] float32 in [-1, 1], with
a dynamic batch axis, the noise inputs frozen to the generator's constant buffers (``"const"``,
the engine's default) and everything else as exported weights. The mapping network stays in
torch (it is tiny and runs once per identity). Export uses torch's dynamo exporter
(``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``): the TorchScript exporter
cannot trace the modulated convolution's transposed conv with a batch-dependent input.

After writing, the graph is checked with onnxruntime against the torch output at a few batch
sizes (max |onnx − torch| is reported; float32 stays well under 1e-3), and a JSON sidecar
``<out>.json`` records what the graph was made from (generator hash, resolution, num_ws, w_dim,
opset, torch and onnx versions, the check's numbers), which the TensorRT builder keys its cache on.
"""
from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from engine.synthesis.fingerprint import generator_hash

__all__ = ["SynthesisGraph", "export_synthesis", "check_onnx", "sidecar_path", "read_sidecar", "DEFAULT_OPSET",
           "ExportError"]

DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """The export or its check failed (one-line message)."""


class SynthesisGraph(torch.nn.Module):
    """What is exported: ``G.synthesis(ws, noise_mode="const")`` as a module of one input."""

    def __init__(self, G: torch.nn.Module, noise_mode: str = "const"):
        super().__init__()
        if noise_mode not in ("const", "none"):
            raise ValueError(f"noise_mode {noise_mode!r} cannot be exported (random noise is not a fixed graph); "
                             "use 'const' or 'none'")
        self.synthesis = G.synthesis
        self.noise_mode = noise_mode

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws, noise_mode=self.noise_mode)


def sidecar_path(onnx_path: os.PathLike | str) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def read_sidecar(onnx_path: os.PathLike | str) -> dict:
    """The JSON written next to an exported graph (ExportError when missing or unreadable)."""
    p = sidecar_path(onnx_path)
    try:
        meta = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{p}: cannot read the export record ({exc})") from None
    if not isinstance(meta, dict) or "generator_hash" not in meta:
        raise ExportError(f"{p}: not a StyleCast export record")
    return meta


def _example_ws(G, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.z_dim, generator=gen)
    with torch.inference_mode():
        return G.mapping(z.to(G.mapping.w_avg.device), truncation_psi=0.7).float().cpu().clone()


def check_onnx(G, onnx_path: os.PathLike | str, *, batches: Sequence[int] = (1, 2, 5), seed: int = 0,
               noise_mode: str = "const") -> dict:
    """Run the graph with onnxruntime (CPU) and torch on the same ws; returns
    ``{"max_abs_diff": float, "per_batch": {b: diff}, "ort_version": str}``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    graph = SynthesisGraph(G, noise_mode).eval()
    per_batch = {}
    for i, b in enumerate(batches):
        ws = _example_ws(G, int(b), seed + i)
        with torch.inference_mode():
            ref = graph(ws.to(G.mapping.w_avg.device)).float().cpu().numpy()
        out = sess.run(None, {name: ws.numpy()})[0]
        if out.shape != ref.shape:
            raise ExportError(f"{onnx_path}: onnxruntime gives {out.shape} for batch {b}, torch {ref.shape}")
        per_batch[int(b)] = float(np.abs(out - ref).max())
    return {"max_abs_diff": max(per_batch.values()), "per_batch": per_batch, "ort_version": ort.__version__}


def export_synthesis(G, out: os.PathLike | str, *, opset: int = DEFAULT_OPSET, max_batch: int = 64,
                     noise_mode: str = "const", check_batches: Sequence[int] = (1, 2, 5), tolerance: float = 1e-3,
                     source: Optional[str] = None) -> dict:
    """Export ``G.synthesis`` (float32, CPU) to ``out`` with a dynamic batch axis 1..max_batch,
    check it with onnxruntime (ExportError when the difference exceeds ``tolerance``) and write
    the sidecar; returns the sidecar's dict."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    G = G.float().cpu().eval()
    graph = SynthesisGraph(G, noise_mode).eval()
    ws = _example_ws(G, 2, 1234)
    tmp = out.with_name(out.name + ".tmp")
    t0 = time.perf_counter()
    batch = torch.export.Dim("batch", min=1, max=max(2, int(max_batch)))   # torch.export wants min < max
    try:
        quiet = logging.getLogger("torch.onnx")                   # "torchvision is not installed" notes
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.onnx.export(graph, (ws,), dynamo=True, opset_version=int(opset), input_names=["ws"],
                                            output_names=["img"], dynamic_shapes={"ws": {0: batch}}, verbose=False)
        finally:
            quiet.setLevel(level)
        program.save(os.fspath(tmp))
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx extra (pip install 'stylecast[onnx]'): {exc}") from None
    except Exception as exc:  # the exporter raises many types; report one line
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
    export_s = time.perf_counter() - t0
    try:
        check = check_onnx(G, tmp, batches=[b for b in check_batches if b <= max_batch] or [1], noise_mode=noise_mode)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    if not check["max_abs_diff"] <= tolerance:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"onnxruntime output differs from torch by {check['max_abs_diff']:.3g} (> {tolerance:g})")
    os.replace(tmp, out)
    import onnx

    meta = {
        "format": "stylecast-synthesis-onnx/1",
        "generator_hash": generator_hash(G),
        "source": source,
        "img_resolution": int(G.img_resolution),
        "num_ws": int(G.num_ws),
        "w_dim": int(G.w_dim),
        "noise_mode": noise_mode,
        "opset": int(opset),
        "max_batch": int(max_batch),
        "inputs": {"ws": ["batch", int(G.num_ws), int(G.w_dim)]},
        "outputs": {"img": ["batch", 3, int(G.img_resolution), int(G.img_resolution)]},
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "ort_version": check["ort_version"],
        "max_abs_diff": check["max_abs_diff"],
        "per_batch_abs_diff": {str(k): v for k, v in check["per_batch"].items()},
        "export_s": round(export_s, 2),
        "size_bytes": out.stat().st_size,
    }
    side = sidecar_path(out)
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(json.dumps(meta, indent=2))
    os.replace(tmp_side, side)
    return meta
