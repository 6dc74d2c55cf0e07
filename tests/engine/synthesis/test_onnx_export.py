"""engine.synthesis.onnx_export (and its CLI, trt_build.export): the synthesis network as ONNX with a dynamic batch axis, checked against
torch with onnxruntime; the export record; CLI errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs the onnx extra (pip install 'stylecast[onnx]')")
ort = pytest.importorskip("onnxruntime", reason="the export check needs onnxruntime (the onnx extra)")
pytest.importorskip("onnxscript", reason="torch's dynamo ONNX exporter needs onnxscript (the onnx extra)")

from engine.synthesis.networks import Generator, GeneratorConfig  # noqa: E402
from engine.synthesis import onnx_export as export  # noqa: E402
from trt_build import export as export_cli  # noqa: E402


@pytest.fixture(scope="module")
def small_G():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, img_resolution=16,
                                  channels={4: 32, 8: 16, 16: 8}, conv_clamp=256.0)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)                          # the frozen const noise must be in the graph
    return G


@pytest.fixture(scope="module")
def exported(small_G, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "syn.onnx"
    meta = export.export_synthesis(small_G, out, max_batch=8, check_batches=(1, 3), source="small")
    return out, meta


def test_export_matches_torch_at_any_batch(small_G, exported):
    out, meta = exported
    assert out.is_file() and meta["max_abs_diff"] <= 1e-4
    assert meta["img_resolution"] == 16 and meta["num_ws"] == small_G.num_ws and meta["max_batch"] == 8
    assert json.loads(export.sidecar_path(out).read_text()) == json.loads(json.dumps(meta))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "ws" and not isinstance(inp.shape[0], int)            # dynamic batch axis
    assert inp.shape[1:] == [small_G.num_ws, small_G.w_dim]
    assert outp.name == "img" and outp.shape[1:] == [3, small_G.img_resolution, small_G.img_resolution]
    for b in (1, 4, 7):                                                         # sizes the check did not use
        ws = torch.randn(b, small_G.num_ws, small_G.w_dim)
        with torch.inference_mode():
            ref = small_G.synthesis(ws, noise_mode="const").numpy()
        got = sess.run(None, {"ws": ws.numpy()})[0]
        assert got.shape == (b, 3, 16, 16)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    # the const noise is part of the graph: without it the image differs
    with torch.inference_mode():
        no_noise = small_G.synthesis(ws, noise_mode="none").numpy()
    assert np.abs(got - no_noise).max() > 1e-3


def test_sidecar_errors_and_random_noise_refused(tmp_path, small_G):
    with pytest.raises(export.ExportError, match="cannot read the export record"):
        export.read_sidecar(tmp_path / "missing.onnx")
    (tmp_path / "x.onnx.json").write_text("[1, 2]")
    with pytest.raises(export.ExportError, match="not a StyleCast export record"):
        export.read_sidecar(tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="random noise"):
        export.SynthesisGraph(small_G, "random")


@pytest.mark.parametrize("argv,match", [
    (["--out", "x.txt"], "should end in .onnx"),
    (["--out", "x.onnx", "--max-batch", "0"], "--max-batch must be at least 1"),
    (["--out", "x.onnx", "--generator", "nope.pkl"], "no such file"),
])
def test_cli_errors_one_line_exit_2(tmp_path, capsys, argv, match):
    argv = [a if not a.startswith("x.") else str(tmp_path / a) for a in argv]
    with pytest.raises(SystemExit) as exc:
        export_cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and match in err and err.count("\n") == 1
