"""engine.synthesis.backends: one interface, torch and onnxruntime implementations, auto choice."""
from __future__ import annotations

import pytest
import torch

from engine.synthesis.backends import (BackendError, OnnxRuntimeBackend, TorchBackend, available_backends,
                                       create_backend)
from engine.synthesis.networks import Generator, GeneratorConfig


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(1)
    G = Generator(GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, img_resolution=16,
                                  channels={4: 32, 8: 16, 16: 8}, conv_clamp=256.0)).eval().requires_grad_(False)
    return G


def _ws(G, b, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return G.mapping(torch.randn(b, G.z_dim, generator=gen), truncation_psi=0.7)


def test_torch_backend_float32_is_the_generator(G):
    b = TorchBackend(G)
    ws = _ws(G, 3)
    with torch.inference_mode():
        ref = G.synthesis(ws, noise_mode="const")
    out = b(ws)
    assert out.dtype == torch.float32 and out.shape == (3, 3, 16, 16)
    assert torch.equal(out, ref)
    assert b.describe()["backend"] == "torch" and b.describe()["dtype"] == "float32"
    with pytest.raises(ValueError, match=r"ws must be \[B, "):
        b(torch.zeros(2, G.num_ws + 1, G.w_dim))


def test_torch_backend_bfloat16_leaves_the_generator_alone(G):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    b = TorchBackend(G, dtype="bfloat16")
    ws = _ws(G, 2, seed=1)
    with torch.inference_mode():
        ref = G.synthesis(ws, noise_mode="const")
    out = b(ws)
    assert out.dtype == torch.float32
    err = float((out - ref).abs().max())
    assert 0 < err < 0.1 * float(ref.abs().max()), err           # bfloat16 rounding, not garbage
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert next(G.synthesis.parameters()).dtype == torch.float32


def test_torch_backend_refuses_what_needs_cuda(G):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for CPU-only machines")
    with pytest.raises(BackendError, match="float16 synthesis needs CUDA"):
        TorchBackend(G, dtype="float16")
    with pytest.raises(BackendError, match="CUDA graphs need a CUDA device"):
        TorchBackend(G, cuda_graphs=True)
    with pytest.raises(BackendError, match="CUDA is not available"):
        TorchBackend(G, device="cuda")
    with pytest.raises(BackendError, match="TensorRT needs a CUDA GPU"):
        create_backend("trt", G)
    assert available_backends("cpu")["trt"] == "TensorRT needs a CUDA GPU"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA paths (float16, channels_last, CUDA graphs) need a GPU")
def test_cuda_float16_and_graphs_match_float32(G):
    ws = _ws(G, 4, seed=2).cuda()
    ref = TorchBackend(G, device="cuda")(ws)
    half = TorchBackend(G, device="cuda", dtype="float16")
    graphs = TorchBackend(G, device="cuda", dtype="float16", cuda_graphs=True)
    a, g1, g2 = half(ws), graphs(ws), graphs(ws * 1.0)
    assert half.channels_last and float((a.float() - ref).abs().max()) < 0.05
    assert torch.equal(g1, g2) and float((g1.float() - a.float()).abs().max()) < 1e-2


def test_onnx_backend_matches_torch(G, tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (the onnx extra)")
    pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript (the onnx extra)")
    b = create_backend("onnx", G, max_batch=4, cache_dir=tmp_path)
    assert isinstance(b, OnnxRuntimeBackend) and b.max_batch == 4
    assert len(list(tmp_path.glob("synthesis-*.onnx"))) == 1
    for n in (1, 4):
        ws = _ws(G, n, seed=n)
        with torch.inference_mode():
            ref = G.synthesis(ws, noise_mode="const")
        out = b(ws)
        assert out.shape == ref.shape and float((out - ref).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="outside 1..4"):
        b(_ws(G, 5))
    # the cached graph is reused: a second backend does not export again
    mtime = next(tmp_path.glob("synthesis-*.onnx")).stat().st_mtime_ns
    create_backend("onnx", G, max_batch=4, cache_dir=tmp_path)
    assert next(tmp_path.glob("synthesis-*.onnx")).stat().st_mtime_ns == mtime


def test_auto_picks_a_backend_and_says_why(G, tmp_path):
    lines = []
    b = create_backend("auto", G, max_batch=4, cache_dir=tmp_path, log=lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"backend auto: {b.name}")
    if available_backends("cpu")["onnx"] == "":
        assert "torch" in lines[0] and "onnxruntime" in lines[0] and "ms per frame" in lines[0]
    ws = _ws(G, 2, seed=5)
    with torch.inference_mode():
        ref = G.synthesis(ws, noise_mode="const")
    assert float((b(ws) - ref).abs().max()) < 1e-4
    with pytest.raises(ValueError, match="backend must be one of"):
        create_backend("cuda", G)
