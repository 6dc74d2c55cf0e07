"""Smoke test of ``python -m benchmarks.synthesis``: it runs, and writes the JSON and PNG.

No timing assertions: only that every cell produced a row with the promised fields.
"""
import json

import pytest

from benchmarks import common, synthesis

TINY = ["--quick", "--resolutions", "8", "16", "--batches", "1", "2", "--channel-max", "16",
        "--z-dim", "16", "--mapping-layers", "2", "--cell-seconds", "1", "--no-malloc-tuning"]


def test_quick_run_writes_json_and_png(tmp_path):
    report = synthesis.main(TINY + ["--dtypes", "float32", "bfloat16", "--out-dir", str(tmp_path)])

    json_path, png_path = tmp_path / "synthesis.json", tmp_path / "synthesis.png"
    assert json_path.is_file() and png_path.is_file()
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(json_path.read_text())
    assert data == json.loads(json.dumps(report))

    env = data["environment"]
    for key in ("device", "device_name", "cpu_model", "torch_version", "num_threads", "git_commit",
                "timestamp", "python_version"):
        assert key in env
    assert env["device"] == "cpu" and env["num_threads"] >= 1

    assert "allocator_env" in env
    assert data["settings"]["noise_mode"] == "const"
    assert data["settings"]["malloc_tuning"] is False
    assert set(data["configs"]) == {"8", "16"}
    cells = {(r["resolution"], r["batch"], r["dtype"]) for r in data["results"]}
    assert cells == {(res, b, dt) for res in (8, 16) for b in (1, 2) for dt in ("float32", "bfloat16")}
    for row in data["results"]:
        assert "error" not in row, row
        assert row["repeats"] >= 1 and len(row["times_ms"]) == row["repeats"]
        for key in ("median_ms_per_batch", "ms_per_frame", "frames_per_s"):
            assert row[key] > 0
        assert row["ms_per_frame"] == pytest.approx(row["median_ms_per_batch"] / row["batch"])
        assert row["frames_per_s"] == pytest.approx(1e3 / row["ms_per_frame"])


def test_backends_side_by_side(tmp_path):
    """torch and onnxruntime in one run: every cell is a row naming its backend; a backend that
    cannot run here (trt on a CPU) is a row with its reason, not a crash."""
    pytest.importorskip("onnxruntime", reason="the onnx backend needs the onnx extra")
    pytest.importorskip("onnxscript", reason="the ONNX export needs onnxscript (the onnx extra)")
    report = synthesis.main(["--quick", "--resolutions", "16", "--batches", "1", "2", "--channel-max", "16",
                             "--z-dim", "16", "--mapping-layers", "2", "--cell-seconds", "1",
                             "--no-malloc-tuning", "--no-plot", "--backends", "torch", "onnx", "trt",
                             "--out-dir", str(tmp_path)])
    rows = {(r["backend"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {(b, n) for b in ("torch", "onnx", "trt") for n in (1, 2)}
    for n in (1, 2):
        assert "error" not in rows[("torch", n)] and "error" not in rows[("onnx", n)]
        assert rows[("onnx", n)]["backend_info"]["backend"] == "onnx" and rows[("onnx", n)]["ms_per_frame"] > 0
        assert "TensorRT needs a CUDA GPU" in rows[("trt", n)]["error"]
    assert report["settings"]["backends"] == ["torch", "onnx", "trt"]


def test_ffhq_shape_configs_follow_official_nvlabs_settings():
    assert common.ffhq_channel_base(128) == 16384
    assert common.ffhq_channel_base(256) == 16384
    assert common.ffhq_channel_base(512) == 32768
    assert common.ffhq_channel_base(1024) == 32768
    cfg = common.ffhq_shape_config(1024)
    assert cfg.channels[4] == 512 and cfg.channels[1024] == 32
    assert cfg.conv_clamp == 256 and cfg.mapping_layers == 8 and cfg.z_dim == cfg.w_dim == 512
    assert common.ffhq_shape_config(256).channels[256] == 64
