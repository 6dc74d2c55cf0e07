"""engine.synthesis.trt_engine / trt_backend and the trt_build.build CLI: everything up to the engine build runs without TensorRT (cache keys, paths,
profiles, FP32 layer rule, PSNR); the build and the runtime need tensorrt + CUDA."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.cli_util import UsageError
from engine.synthesis import trt_backend
from engine.synthesis import trt_engine as build
from trt_build import build as build_cli

SPEC = build.EngineSpec(generator_hash="ab" * 32, img_resolution=512, num_ws=16, w_dim=512, max_batch=16,
                        opt_batch=4, precision="fp16", trt_version="10.3.0", gpu_name="NVIDIA H100 80GB HBM3",
                        compute_capability="9.0")


def test_engine_key_changes_with_everything_that_invalidates_an_engine(tmp_path):
    key = build.engine_key(SPEC)
    assert len(key) == 24 and key == build.engine_key(dataclasses.replace(SPEC))
    changes = dict(generator_hash="cd" * 32, img_resolution=1024, num_ws=18, w_dim=256, max_batch=32, opt_batch=8,
                   precision="fp32", trt_version="10.4.0", gpu_name="NVIDIA H200", compute_capability="8.9")
    keys = {build.engine_key(dataclasses.replace(SPEC, **{k: v})) for k, v in changes.items()}
    assert len(keys) == len(changes) and key not in keys
    paths = build.engine_paths(SPEC, tmp_path)
    assert paths["engine"].parent == tmp_path and key in paths["engine"].name and paths["engine"].suffix == ".plan"
    assert paths["record"].stem == paths["engine"].stem
    # one timing cache per GPU + TensorRT version, shared by every checkpoint
    other = build.engine_paths(dataclasses.replace(SPEC, generator_hash="ef" * 32, max_batch=8), tmp_path)
    assert other["timing_cache"] == paths["timing_cache"] and other["engine"] != paths["engine"]
    assert build.engine_paths(dataclasses.replace(SPEC, gpu_name="NVIDIA A10"), tmp_path)["timing_cache"] \
        != paths["timing_cache"]


def test_profile_and_spec_validation():
    assert build.profile_shapes(SPEC) == ((1, 16, 512), (4, 16, 512), (16, 16, 512))
    with pytest.raises(ValueError, match="opt_batch"):
        dataclasses.replace(SPEC, opt_batch=17)
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(SPEC, precision="int8")


def test_fp32_rule_and_psnr():
    assert build.keep_in_fp32([2]) and build.keep_in_fp32([3, 1]) and build.keep_in_fp32([0])
    assert not build.keep_in_fp32([4]) and not build.keep_in_fp32([2, 4])
    a = np.linspace(-1, 1, 1000)
    assert build.psnr(a, a) == float("inf")
    assert build.psnr(a, a + 0.02) == pytest.approx(10 * np.log10(4 / 0.0004))


def test_without_tensorrt_the_build_says_why(capsys):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here; this checks the message on machines without it")
    except ImportError:
        pass
    with pytest.raises(build.TRTBuildError, match="tensorrt is not installed"):
        build.spec_for(torch.nn.Linear(1, 1), device="cuda")
    with pytest.raises(SystemExit) as exc:
        build_cli.main([])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "tensorrt is not installed" in err and err.count("\n") == 1
    from engine.synthesis.backends import BackendError, available_backends, create_backend
    from engine.synthesis.networks import demo_generator
    assert "TensorRT" in available_backends("cpu")["trt"]
    with pytest.raises(BackendError):
        create_backend("trt", demo_generator())


def test_device_option_and_its_gpu_alias():
    parser = build_cli.build_parser()
    assert parser.parse_args([]).device == "cuda:0"
    assert parser.parse_args(["--gpu", "1"]).device == parser.parse_args(["--device", "1"]).device == "1"
    for text, want in (("1", "cuda:1"), ("cuda", "cuda:0"), ("cuda:2", "cuda:2"), (" CUDA:0 ", "cuda:0")):
        assert build_cli.cuda_device_name(text) == want
    for bad in ("cpu", "tpu", "cuda:x", ""):
        with pytest.raises(UsageError, match="--device must be a CUDA device"):
            build_cli.cuda_device_name(bad)
    with pytest.raises(SystemExit) as exc:
        build_cli.main(["--device", "cpu"])            # before tensorrt is even looked for
    assert exc.value.code == 2


def _has_trt_gpu() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _has_trt_gpu(), reason="building and running a TensorRT engine needs tensorrt and a CUDA GPU")
def test_engine_build_cache_and_psnr(tmp_path):
    from engine.synthesis.networks import demo_generator
    from engine.synthesis.trt_backend import TensorRTBackend

    G = demo_generator()
    path, spec, record = trt_backend.ensure_engine(G, device="cuda", max_batch=4, cache_dir=tmp_path, log=lambda m: None)
    assert path.is_file() and record["psnr_db"] >= build.MIN_PSNR_DB
    lines = []
    path2, _, _ = trt_backend.ensure_engine(G, device="cuda", max_batch=4, cache_dir=tmp_path, log=lines.append)
    assert path2 == path and any("loading cached engine" in m for m in lines)
    backend = TensorRTBackend(path, spec, device="cuda")
    ws = G.cuda().mapping(torch.randn(3, G.z_dim, device="cuda"), truncation_psi=0.7)
    ref = G.synthesis(ws, noise_mode="const").float()
    assert build.psnr(backend(ws).float().cpu().numpy(), ref.cpu().numpy()) >= build.MIN_PSNR_DB
