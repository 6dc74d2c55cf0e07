"""Checkpoint readers: round trips through the real on-disk formats, hostile and broken files."""

from __future__ import annotations

import builtins
import copy
import dataclasses
import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
import zipfile
from pathlib import Path

import formats
import numpy as np
import pytest
import torch

from engine.synthesis import checkpoints, presets, safe_pickle
from engine.synthesis.checkpoints import (
    CheckpointError,
    load_generator,
    read_checkpoint,
    save_generator,
)
from engine.synthesis.networks import GeneratorConfig, demo_generator

# Small configs: NVlabs widths follow channel_base / res; rosinality's are fixed at 512 up to 32 px.
NV_CFG = GeneratorConfig.nvlabs(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16,
                                mapping_layers=2, conv_clamp=256)
NV_CFG_B = GeneratorConfig.nvlabs(z_dim=12, w_dim=8, img_resolution=32, channel_base=256, channel_max=16,
                                  mapping_layers=3, lr_multiplier=0.05)
NV_CFG_NONOISE = GeneratorConfig(z_dim=8, w_dim=8, mapping_layers=1, img_resolution=8, img_channels=4,
                                 channels={4: 16, 8: 8}, use_noise=False)
ROS_CFG = GeneratorConfig.rosinality(size=8, style_dim=8, n_mlp=2)
ROS_CFG_16 = GeneratorConfig.rosinality(size=16, style_dim=4, n_mlp=1)
ROS_CFG_8 = GeneratorConfig.rosinality(size=8, style_dim=4, n_mlp=1, lr_mlp=0.01)


def _z(config: GeneratorConfig, n: int = 2) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(123).randn(n, config.z_dim)).float()


def _images(G, config, psi=0.7):
    with torch.no_grad():
        return G(_z(config), truncation_psi=psi, noise_mode="const")


def _assert_same_generator(G_loaded, G_ref):
    assert G_loaded.config == G_ref.config
    sd_l, sd_r = G_loaded.state_dict(), G_ref.state_dict()
    assert sorted(sd_l) == sorted(sd_r)
    for k in sd_r:
        assert torch.equal(sd_l[k], sd_r[k]), k
    assert torch.equal(_images(G_loaded, G_ref.config), _images(G_ref, G_ref.config))


@pytest.fixture(scope="module")
def nv_G():
    return formats.random_generator(NV_CFG, seed=1)


@pytest.fixture(scope="module")
def ros_G():
    return formats.random_generator(ROS_CFG, seed=2)


class _Duck:
    """Stands in for a Generator in the writers, with an edited state dict."""

    def __init__(self, config, sd):
        self.config = config
        self._sd = sd

    def state_dict(self):
        return self._sd


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(
    "config, protocol",
    [(NV_CFG, 3), (NV_CFG, 4), (NV_CFG, 5), (NV_CFG_B, 3), (NV_CFG_NONOISE, 4)],
    ids=["16px-clamp-p3", "16px-clamp-p4", "16px-clamp-p5", "32px-lr05-p3", "rgba-nonoise-p4"],
)
def test_nvlabs_pickle_round_trip(tmp_path, config, protocol):
    G = formats.random_generator(config, seed=11)
    path = formats.write_nvlabs_pkl(G, tmp_path / "network-snapshot-000100.pkl", protocol=protocol)
    ckpt = read_checkpoint(path)
    assert ckpt.format == checkpoints.FORMAT_NVLABS
    _assert_same_generator(load_generator(path), G)


def test_random_generator_is_deterministic_and_nontrivial():
    a = formats.random_generator(NV_CFG, seed=5)
    b = formats.random_generator(NV_CFG, seed=5)
    c = formats.random_generator(NV_CFG, seed=6)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
        assert not torch.equal(v, c.state_dict()[k]), k
        assert v.abs().sum() > 0, f"{k} is all zeros"
    sd = a.state_dict()
    assert 0.1 <= float(sd["synthesis.b8.conv0.noise_strength"]) <= 0.5
    assert abs(float(sd["synthesis.b8.conv0.affine.bias"].mean()) - 1.0) < 0.5


@pytest.mark.parametrize(
    "train_ckpt, legacy_format", [(False, False), (True, False), (True, True)], ids=["converted", "train.py", "legacy"]
)
def test_rosinality_round_trip(tmp_path, ros_G, train_ckpt, legacy_format):
    path = formats.write_rosinality_pt(ros_G, tmp_path / "050000.pt", train_ckpt=train_ckpt, legacy_format=legacy_format)
    ckpt = read_checkpoint(path)
    assert ckpt.format == checkpoints.FORMAT_ROSINALITY
    assert ckpt.config.demod_weight_gain is True
    _assert_same_generator(load_generator(path), ros_G)


def test_rosinality_round_trip_16px(tmp_path):
    # 16 px covers the second block's convs.2/convs.3/to_rgbs.1/noise_3/noise_4 indices
    G = formats.random_generator(ROS_CFG_16, seed=8)
    _assert_same_generator(load_generator(formats.write_rosinality_pt(G, tmp_path / "r16.pt")), G)


def test_rosinality_train_checkpoint_holds_what_train_py_saves(tmp_path, ros_G):
    path = formats.write_rosinality_pt(ros_G, tmp_path / "ckpt.pt", train_ckpt=True, include_latent_avg=False)
    raw = torch.load(path, weights_only=False)
    assert set(raw) == {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}
    assert raw["g_optim"]["state"][0]["exp_avg"].shape == (4, 3)
    assert raw["args"].size == 8 and raw["args"].latent == 8


def test_rosinality_without_latent_avg_uses_mean_of_mapped_z(tmp_path, ros_G):
    path = formats.write_rosinality_pt(ros_G, tmp_path / "ckpt.pt", train_ckpt=True, include_latent_avg=False)
    with pytest.warns(UserWarning, match="latent_avg"):
        G = load_generator(path)
    z = torch.from_numpy(np.random.RandomState(0).randn(10_000, 8)).float()
    with torch.no_grad():
        expect = ros_G.mapping.forward_w(z).mean(dim=0)
    assert torch.allclose(G.mapping.w_avg, expect, atol=1e-5)
    for k, v in ros_G.state_dict().items():
        if k != "mapping.w_avg":
            assert torch.equal(G.state_dict()[k], v), k
    assert torch.equal(_images(G, ROS_CFG, psi=1.0), _images(ros_G, ROS_CFG, psi=1.0))


def test_rosinality_bare_g_ema_state_dict_loads(tmp_path):
    G = formats.random_generator(ROS_CFG_8, seed=3)
    formats.write_rosinality_pt(G, tmp_path / "full.pt")
    g_ema = torch.load(tmp_path / "full.pt", weights_only=True)["g_ema"]
    torch.save(g_ema, tmp_path / "bare.pt")
    with pytest.warns(UserWarning, match="latent_avg"):
        loaded = load_generator(tmp_path / "bare.pt")
    assert loaded.config == ROS_CFG_8


def test_rosinality_channel_multiplier_inferred_from_shapes(tmp_path):
    cfg = GeneratorConfig.rosinality(size=64, style_dim=4, n_mlp=1, channel_multiplier=1)
    G = formats.random_generator(cfg, seed=4)
    path = formats.write_rosinality_pt(G, tmp_path / "cm1.pt")
    assert read_checkpoint(path).config == cfg


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_stylecast_round_trip(tmp_path, nv_G, dtype):
    path = save_generator(nv_G, tmp_path / "g.safetensors", dtype=dtype, source="test")
    G = load_generator(path)
    assert G.config == nv_G.config
    for k, v in nv_G.state_dict().items():
        assert G.state_dict()[k].dtype == torch.float32
        assert torch.equal(G.state_dict()[k], v.to(dtype).float()), k
    if dtype == torch.float32:
        _assert_same_generator(G, nv_G)


def test_stylecast_files_are_self_describing(tmp_path, nv_G):
    from safetensors import safe_open

    path = save_generator(nv_G, tmp_path / "g.safetensors", dtype=torch.float16)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    assert GeneratorConfig.from_dict(json.loads(meta["stylecast_config"])) == nv_G.config
    side = json.loads((tmp_path / "g.json").read_text())
    assert GeneratorConfig.from_dict(side["config"]) == nv_G.config
    assert side["dtype"] == "float16" and side["tensors"]["synthesis.b4.const"] == [16, 4, 4]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_stylecast_falls_back_to_sidecar_and_round_trips_other_configs(tmp_path, ros_G):
    from safetensors.torch import save_file

    save_generator(ros_G, tmp_path / "r.safetensors")
    # the same tensors without header metadata: the sidecar supplies the config
    save_file({k: v.contiguous() for k, v in ros_G.state_dict().items()}, str(tmp_path / "r.safetensors"))
    _assert_same_generator(load_generator(tmp_path / "r.safetensors"), ros_G)
    (tmp_path / "r.json").unlink()
    with pytest.raises(CheckpointError, match=r"r\.safetensors: .*no sidecar r\.json"):
        load_generator(tmp_path / "r.safetensors")


def test_save_generator_refuses_values_float16_cannot_hold(tmp_path):
    G = formats.random_generator(NV_CFG, seed=9)
    with torch.no_grad():
        G.mapping.w_avg[3] = 1e6
    with pytest.raises(ValueError, match=r"tensor 'mapping\.w_avg' is not finite as float16 \(max \|x\| = 1e\+06\)"):
        save_generator(G, tmp_path / "big.safetensors", dtype=torch.float16)
    assert not list(tmp_path.iterdir())
    save_generator(G, tmp_path / "big.safetensors")  # float32 holds it
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "big.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_save_generator_handles_channels_last(tmp_path):
    G = formats.random_generator(NV_CFG, seed=9)
    G.set_channels_last(True)
    path = save_generator(G, tmp_path / "cl.safetensors")
    loaded = load_generator(path)
    for k, v in G.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_format_is_chosen_by_content_not_extension(tmp_path, nv_G):
    small_ros = formats.random_generator(ROS_CFG_8, seed=3)
    formats.write_nvlabs_pkl(nv_G, tmp_path / "really_a_pickle.pt")
    formats.write_rosinality_pt(small_ros, tmp_path / "really_torch.pkl")
    save_generator(nv_G, tmp_path / "ours.bin")
    assert read_checkpoint(tmp_path / "really_a_pickle.pt").format == checkpoints.FORMAT_NVLABS
    assert read_checkpoint(tmp_path / "really_torch.pkl").format == checkpoints.FORMAT_ROSINALITY
    assert read_checkpoint(tmp_path / "ours.bin").format == checkpoints.FORMAT_STYLECAST
    _assert_same_generator(load_generator(tmp_path / "ours.bin"), nv_G)


def test_loaded_generator_is_ready_for_inference(tmp_path, nv_G):
    G = load_generator(formats.write_nvlabs_pkl(nv_G, tmp_path / "g.pkl"), device="cpu")
    assert not G.training
    assert not any(p.requires_grad for p in G.parameters())
    assert G.device == torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# NVlabs layout variants


def test_stylegan3_repo_layout_of_stylegan2_nets_loads(tmp_path, nv_G):
    # stylegan3's networks_stylegan2.Generator takes **synthesis_kwargs at the top level
    snap = formats.nvlabs_snapshot(nv_G)
    kw = snap["G_ema"].state["_init_kwargs"]
    sk = kw.pop("synthesis_kwargs")
    kw.update(sk, fused_modconv_default="inference_only")
    formats.dump_nvlabs_pickle(snap, tmp_path / "sg3repo.pkl", protocol=4)
    _assert_same_generator(load_generator(tmp_path / "sg3repo.pkl"), nv_G)


def test_nvlabs_without_init_kwargs_reads_config_from_layers(tmp_path):
    G = formats.random_generator(NV_CFG_B, seed=3)
    snap = formats.nvlabs_snapshot(G)
    snap["G_ema"].state["_init_kwargs"] = {}
    formats.dump_nvlabs_pickle(snap, tmp_path / "nokw.pkl")
    _assert_same_generator(load_generator(tmp_path / "nokw.pkl"), G)


def test_numpy_1x_global_names_are_accepted(tmp_path, nv_G):
    # official pickles were written with numpy 1.x: numpy.core.multiarray.scalar
    path = formats.write_nvlabs_pkl(nv_G, tmp_path / "np1.pkl", protocol=3)  # text GLOBAL opcodes
    data = path.read_bytes()
    assert b"cnumpy._core.multiarray\nscalar\n" in data
    path.write_bytes(data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"))
    _assert_same_generator(load_generator(path), nv_G)


def _snap_with(nv_G, edit):
    snap = formats.nvlabs_snapshot(nv_G)
    edit(snap["G_ema"])
    return snap


def _child(obj, dotted):
    for part in dotted.split("."):
        obj = obj.state["_modules"][part]
    return obj


def test_conditional_network_is_refused(tmp_path, nv_G):
    def edit(g):
        g.state["_init_kwargs"]["c_dim"] = 10
        g.state["c_dim"] = 10

    formats.dump_nvlabs_pickle(_snap_with(nv_G, edit), tmp_path / "cond.pkl")
    with pytest.raises(CheckpointError, match=r"cond\.pkl: conditional generators \(c_dim=10\)"):
        load_generator(tmp_path / "cond.pkl")


def test_non_skip_architecture_is_refused(tmp_path, nv_G):
    def edit(g):
        g.state["_init_kwargs"]["synthesis_kwargs"]["architecture"] = "resnet"

    formats.dump_nvlabs_pickle(_snap_with(nv_G, edit), tmp_path / "resnet.pkl")
    with pytest.raises(CheckpointError, match=r"resnet\.pkl: synthesis architecture 'resnet' is not supported"):
        load_generator(tmp_path / "resnet.pkl")


def test_stylegan3_network_is_refused_clearly(tmp_path):
    # Shape of a networks_stylegan3 G_ema: SynthesisInput + layers holding numpy arrays.
    P = formats.PersistentObj
    inp_state = formats._module_dict()
    inp_state["size"] = np.broadcast_to(np.asarray(36), [2])
    inp_state["_buffers"]["freqs"] = torch.randn(4, 2)
    layer_state = formats._module_dict()
    layer_state["in_size"] = np.broadcast_to(np.asarray(36), [2])
    layer_state["_parameters"]["weight"] = torch.nn.Parameter(torch.randn(4, 4, 3, 3), requires_grad=False)
    syn = formats._module_dict()
    syn["_modules"]["input"] = P("SynthesisInput", inp_state)
    syn["_modules"]["L0_36_4"] = P("SynthesisLayer", layer_state)
    gen = formats._module_dict()
    gen["_modules"]["synthesis"] = P("SynthesisNetwork", syn)
    gen["_modules"]["mapping"] = P("MappingNetwork", formats._module_dict())
    gen["_init_kwargs"] = dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=16, img_channels=3)
    formats.dump_nvlabs_pickle({"G": None, "D": None, "G_ema": P("Generator", gen)}, tmp_path / "sg3.pkl", protocol=4)
    with pytest.raises(CheckpointError, match=r"sg3\.pkl: StyleGAN3 \(alias-free\) generators are not supported"):
        load_generator(tmp_path / "sg3.pkl")


def test_other_resample_filters_are_refused(tmp_path, nv_G):
    def edit(g):
        _child(g, "synthesis.b8.conv0").state["_buffers"]["resample_filter"] = torch.ones(2, 2) / 4

    formats.dump_nvlabs_pickle(_snap_with(nv_G, edit), tmp_path / "filt.pkl")
    with pytest.raises(CheckpointError, match=r"filt\.pkl: tensor 'synthesis\.b8\.conv0\.resample_filter'"):
        load_generator(tmp_path / "filt.pkl")


# ---------------------------------------------------------------------------------------------
# Missing, extra and mis-shaped tensors: errors name the file and the tensor


def test_nvlabs_shape_mismatch_names_file_and_tensor(tmp_path, nv_G):
    sd = dict(nv_G.state_dict())
    sd["synthesis.b8.conv0.weight"] = torch.randn(16, 8, 3, 3)
    formats.write_nvlabs_pkl(_Duck(NV_CFG, sd), tmp_path / "ckpt.pkl")
    with pytest.raises(CheckpointError) as err:
        load_generator(tmp_path / "ckpt.pkl")
    assert str(err.value) == (
        f"{tmp_path / 'ckpt.pkl'}: tensor 'synthesis.b8.conv0.weight' has shape (16, 8, 3, 3), expected (16, 16, 3, 3)"
    )


def test_nvlabs_missing_tensor_is_an_error(tmp_path, nv_G):
    def edit(g):
        del _child(g, "synthesis.b16.conv1").state["_parameters"]["noise_strength"]

    formats.dump_nvlabs_pickle(_snap_with(nv_G, edit), tmp_path / "missing.pkl")
    with pytest.raises(CheckpointError, match=r"missing\.pkl: missing tensor 'synthesis\.b16\.conv1\.noise_strength'"):
        load_generator(tmp_path / "missing.pkl")


def test_nvlabs_unexpected_tensor_is_an_error(tmp_path, nv_G):
    def edit(g):
        _child(g, "synthesis.b8.conv1").state["_parameters"]["extra"] = torch.nn.Parameter(torch.zeros(3))

    formats.dump_nvlabs_pickle(_snap_with(nv_G, edit), tmp_path / "extra.pkl")
    with pytest.raises(CheckpointError, match=r"extra\.pkl: unexpected tensor 'synthesis\.b8\.conv1\.extra'"):
        load_generator(tmp_path / "extra.pkl")


def test_nvlabs_integer_and_nan_tensors_are_errors(tmp_path, nv_G):
    def as_int(g):
        g.state["_modules"]["mapping"].state["_buffers"]["w_avg"] = torch.zeros(16, dtype=torch.int64)

    formats.dump_nvlabs_pickle(_snap_with(nv_G, as_int), tmp_path / "int.pkl")
    with pytest.raises(CheckpointError, match=r"int\.pkl: tensor 'mapping\.w_avg' has dtype torch\.int64"):
        load_generator(tmp_path / "int.pkl")
    sd = dict(nv_G.state_dict())
    sd["mapping.w_avg"] = torch.full((16,), float("nan"))
    formats.write_nvlabs_pkl(_Duck(NV_CFG, sd), tmp_path / "nan.pkl")
    with pytest.raises(CheckpointError, match=r"nan\.pkl: tensor 'mapping\.w_avg' contains NaN"):
        load_generator(tmp_path / "nan.pkl")


def _edit_torch_file(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, weights_only=False)
    edit(ckpt)
    torch.save(ckpt, dst)
    return dst


def test_rosinality_tensor_errors_use_rosinality_names(tmp_path):
    G = formats.random_generator(ROS_CFG_8, seed=3)
    src = formats.write_rosinality_pt(G, tmp_path / "src.pt")

    def reshape(c):
        c["g_ema"]["convs.0.conv.weight"] = torch.randn(1, 512, 256, 3, 3)

    def drop(c):
        del c["g_ema"]["noises.noise_2"]

    def extra(c):
        c["g_ema"]["convs.9.noise.weight"] = torch.zeros(1)

    def bad_avg(c):
        c["latent_avg"] = torch.zeros(5)

    cases = [
        (reshape, "shape.pt", "tensor 'convs.0.conv.weight' has shape (1, 512, 256, 3, 3), expected (1, 512, 512, 3, 3)"),
        (drop, "drop.pt", "missing tensor 'noises.noise_2'"),
        (extra, "extra.pt", "unexpected tensor 'convs.9.noise.weight'"),
        (bad_avg, "avg.pt", "tensor 'latent_avg' has shape (5,), expected (4,)"),
    ]
    for edit, name, message in cases:
        path = _edit_torch_file(src, tmp_path / name, edit)
        with pytest.raises(CheckpointError) as err:
            load_generator(path)
        assert str(err.value) == f"{path}: {message}"


def test_rosinality_swagan_and_inconsistent_args_are_refused(tmp_path):
    G = formats.random_generator(ROS_CFG_8, seed=3)
    src = formats.write_rosinality_pt(G, tmp_path / "src.pt", train_ckpt=True)
    swagan = _edit_torch_file(src, tmp_path / "swagan.pt", lambda c: setattr(c["args"], "arch", "swagan"))
    with pytest.raises(CheckpointError, match=r"swagan\.pt: rosinality architecture 'swagan' is not supported"):
        load_generator(swagan)
    wrong = _edit_torch_file(src, tmp_path / "size.pt", lambda c: setattr(c["args"], "size", 256))
    with pytest.raises(CheckpointError, match=r"size\.pt: args\.size=256 but the g_ema tensors imply 8"):
        load_generator(wrong)


def test_stylecast_tensor_errors(tmp_path, nv_G):
    from safetensors.torch import save_file

    path = save_generator(nv_G, tmp_path / "g.safetensors")
    meta = {"stylecast_config": json.dumps(NV_CFG.to_dict())}
    sd = {k: v.contiguous() for k, v in nv_G.state_dict().items()}
    del sd["synthesis.b4.torgb.bias"]
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"g\.safetensors: missing tensor 'synthesis\.b4\.torgb\.bias'"):
        load_generator(path)
    sd["synthesis.b4.torgb.bias"] = torch.zeros(3)
    sd["synthesis.b4.const"] = torch.zeros(16, 8, 8)
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"g\.safetensors: tensor 'synthesis\.b4\.const' has shape \(16, 8, 8\)"):
        load_generator(path)
    sd["synthesis.b4.const"] = nv_G.state_dict()["synthesis.b4.const"].contiguous()
    sd["synthesis.b4.extra"] = torch.zeros(2)
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(CheckpointError, match=r"g\.safetensors: unexpected tensor 'synthesis\.b4\.extra'"):
        load_generator(path)
    save_file(sd, str(path), metadata={"stylecast_config": "{not json"})
    with pytest.raises(CheckpointError, match=r"g\.safetensors: invalid StyleCast config in header metadata"):
        load_generator(path)


# ---------------------------------------------------------------------------------------------
# Foreign, truncated and corrupt files


def _png_bytes() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _not_torch_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return buf.getvalue()


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


FOREIGN = {
    "empty.pkl": (lambda: b"", "empty file"),
    "image.pkl": (_png_bytes, "this is a PNG image"),
    "noise.pt": (lambda: np.random.RandomState(0).bytes(4096), "not a generator checkpoint"),
    "plain_dict.pkl": (lambda: pickle.dumps({"weights": [1, 2, 3]}), "pickle has no 'G_ema' network"),
    "a_list.pkl": (lambda: pickle.dumps([1, 2, 3]), "pickle holds a list"),
    "other.zip": (_not_torch_zip, "zip archive is not a torch checkpoint"),
    "no_g_ema.pt": (lambda: _torch_bytes({"state_dict": {"w": torch.zeros(2)}}), "torch file has no 'g_ema'"),
    "text.safetensors": (lambda: b"hello world, not weights\n", "not a generator checkpoint"),
    "tf_legacy.pkl": (lambda: b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.", "TensorFlow StyleGAN pickle"),
}


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_foreign_files_are_refused_naming_the_file(tmp_path, name):
    make, message = FOREIGN[name]
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


@pytest.mark.parametrize("kind", ["nvlabs", "rosinality", "stylecast"])
@pytest.mark.parametrize("keep", [0.5, 0.97, 20])
def test_truncated_files_are_refused_naming_the_file(tmp_path, nv_G, kind, keep):
    small_ros = formats.random_generator(ROS_CFG_8, seed=3)
    full = tmp_path / f"full.{kind}"
    if kind == "nvlabs":
        formats.write_nvlabs_pkl(nv_G, full)
    elif kind == "rosinality":
        formats.write_rosinality_pt(small_ros, full)
    else:
        save_generator(nv_G, full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{kind}"
    cut.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(CheckpointError) as err:
        load_generator(cut)
    assert str(err.value).startswith(f"{cut}: ")


def test_corrupt_bytes_inside_a_pickle_are_refused(tmp_path, nv_G):
    path = formats.write_nvlabs_pkl(nv_G, tmp_path / "flip.pkl")
    data = bytearray(path.read_bytes())
    # damage the torch file nested in the first tensor's storage bytes
    at = data.index(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")
    data[at + 20: at + 60] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flip\.pkl: "):
        load_generator(path)


def test_missing_file_directory_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="not a preset name"):
        load_generator(tmp_path / "nope.pkl")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_generator(tmp_path)
    with pytest.raises(CheckpointError, match=r"ffhq64: no such file .*presets: demo, random, ffhq256, ffhq512, ffhq1024"):
        load_generator("ffhq64")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# ---------------------------------------------------------------------------------------------
# Hostile pickles: refused, naming the global, and their side effect provably absent


def _marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


class _Payload:
    """Unpickling this runs ``kind`` (a real code-execution gadget) to create ``marker``."""

    def __init__(self, kind: str, marker: Path):
        self.kind, self.marker = kind, marker

    def __reduce__(self):
        code = _marker_code(self.marker)
        cmd = [sys.executable, "-c", code]
        if self.kind == "os.system":
            return (os.system, (subprocess.list2cmdline(cmd),))
        if self.kind == "builtins.eval":
            return (builtins.eval, (code,))
        if self.kind == "builtins.exec":
            return (builtins.exec, (code,))
        if self.kind == "subprocess.Popen":
            return (subprocess.Popen, (cmd,))
        if self.kind == "subprocess.check_output":
            return (subprocess.check_output, (cmd,))
        raise ValueError(self.kind)


PAYLOADS = {  # gadget -> the global name the pickle really contains
    "os.system": "posix.system" if os.name == "posix" else "nt.system",
    "builtins.eval": "builtins.eval",
    "builtins.exec": "builtins.exec",
    "subprocess.Popen": "subprocess.Popen",
    "subprocess.check_output": "subprocess.check_output",
}


def _wait_absent(marker: Path) -> None:
    time.sleep(0.2)  # a spawned process would have had time to write it
    assert not marker.exists(), "payload ran!"


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_payloads_are_live_controls(tmp_path, kind):
    """Control: each payload really creates its marker when unpickled by plain pickle."""
    marker = tmp_path / "marker"
    result = pickle.loads(pickle.dumps(_Payload(kind, marker)))
    if isinstance(result, subprocess.Popen):
        result.wait(timeout=30)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_hostile_network_pickle_is_refused(tmp_path, nv_G, kind):
    marker = tmp_path / "marker"
    # at the top level of a snapshot dict...
    top = tmp_path / "top.pkl"
    top.write_bytes(pickle.dumps({"G_ema": _Payload(kind, marker)}))
    with pytest.raises(CheckpointError) as err:
        load_generator(top)
    assert str(err.value) == f"{top}: refusing to load global '{PAYLOADS[kind]}'"
    # ...and hidden deep inside a well-formed persistent network
    snap = _snap_with(nv_G, lambda g: _child(g, "synthesis.b8.conv1").state.__setitem__("act_gain", _Payload(kind, marker)))
    deep = formats.dump_nvlabs_pickle(snap, tmp_path / "deep.pkl")
    with pytest.raises(CheckpointError, match=f"deep\\.pkl: refusing to load global '{PAYLOADS[kind]}'"):
        load_generator(deep)
    _wait_absent(marker)


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy"])
def test_hostile_torch_file_is_refused(tmp_path, kind, legacy_format):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    ckpt = {"g_ema": {"style.1.weight": torch.zeros(4, 4)}, "latent_avg": torch.zeros(4), "args": _Payload(kind, marker)}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    assert str(err.value).startswith(f"{path}: refusing to load global '{PAYLOADS[kind]}'")
    _wait_absent(marker)


class _EvilStorage:
    """A tensor storage whose nested torch bytes carry a payload (torch.storage._load_from_bytes)."""

    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        buf = io.BytesIO()
        torch.save(self.payload, buf, _use_new_zipfile_serialization=False)
        return (torch.storage._load_from_bytes, (buf.getvalue(),))


def test_payload_inside_tensor_storage_bytes_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "storage.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _EvilStorage(_Payload("os.system", marker))}))
    with pytest.raises(CheckpointError, match=f"storage\\.pkl: refusing to load global '{PAYLOADS['os.system']}'"):
        load_generator(path)
    _wait_absent(marker)


class _OversizedView:
    """A tensor whose size/stride reach past its 4-element storage."""

    def __reduce__(self):
        import collections

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.zeros(4).storage()
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (1 << 20,), (1,), False, collections.OrderedDict()))


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    path = tmp_path / "view.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _OversizedView()}))
    with pytest.raises(CheckpointError, match=r"view\.pkl: .*tensor extends past the end of its storage"):
        load_generator(path)


def test_persistent_module_src_is_never_executed(tmp_path, nv_G, monkeypatch):
    marker = tmp_path / "marker"
    evil_src = _marker_code(marker) + "\nclass Generator: pass\n"
    # Control: this is what NVlabs' persistence does with module_src, and it does write the file.
    exec(compile(evil_src, "<module_src>", "exec"), {})
    assert marker.exists()
    marker.unlink()
    # A complete, valid network whose every module_src is hostile loads, and nothing runs.
    monkeypatch.setattr(formats, "NVLABS_MODULE_SRC", evil_src)
    path = formats.write_nvlabs_pkl(nv_G, tmp_path / "src.pkl")
    assert evil_src.encode() in path.read_bytes()
    _assert_same_generator(load_generator(path), nv_G)
    assert not marker.exists()


def test_unknown_persistent_class_is_refused_by_name(tmp_path):
    marker = tmp_path / "marker"
    evil = formats.PersistentObj("Backdoor", formats._module_dict(), module_src=_marker_code(marker))
    path = formats.dump_nvlabs_pickle({"G_ema": evil}, tmp_path / "cls.pkl")
    with pytest.raises(CheckpointError) as err:
        load_generator(path)
    assert str(err.value).startswith(f"{path}: refusing persistent object of unknown class 'Backdoor'")
    assert not marker.exists()


def test_allowlist_is_exactly_what_network_pickles_need():
    allowed = {f"{m}.{n}" for m, n in safe_pickle._ALLOWED_GLOBALS}
    for dangerous in ("posix.system", "builtins.eval", "builtins.exec", "builtins.getattr", "builtins.__import__",
                      "subprocess.Popen", "torch.load", "numpy.load", "copyreg._reconstructor", "pickle.loads"):
        assert dangerous not in allowed


# ---------------------------------------------------------------------------------------------
# Presets (127.0.0.1 only; the internet is never touched)


@pytest.fixture
def preset_env(tmp_path, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("STYLECAST_OFFLINE", raising=False)
    return tmp_path / "cache"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_and_random_presets_need_no_download(preset_env, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", None)
    # "random": the untrained seeded StyleGAN2 of the demo shape, made in memory
    G = load_generator("random")
    ref = demo_generator()
    for k, v in ref.state_dict().items():
        assert torch.equal(G.state_dict()[k], v)
    # "demo": the trained demo generator shipped in engine/assets (the demo world's code as z)
    from engine.demo_world.latent import Z_DIM
    from engine.synthesis.checkpoints import DEMO_ASSET
    demo = load_generator("demo")
    assert DEMO_ASSET.stat().st_size < 8_000_000
    assert demo.z_dim == Z_DIM and demo.img_resolution == 128 and not demo.config.normalize_z and demo.config.z_rest
    for k, v in read_checkpoint(DEMO_ASSET).build("cpu").state_dict().items():
        assert torch.equal(demo.state_dict()[k], v)


def test_offline_fails_at_once_without_trying(preset_env, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network was used")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("STYLECAST_OFFLINE", "1")
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        load_generator("ffhq512")
    assert time.monotonic() - t0 < 2
    msg = str(err.value)
    assert "STYLECAST_OFFLINE" in msg and "pass the local file" in msg
    assert str(preset_env / "ffhq-res512-mirror-stylegan2-noaug.pkl") in msg


def test_no_network_fails_at_once_with_advice(preset_env, monkeypatch):
    url = f"http://127.0.0.1:{_closed_port()}/ffhq-res256-mirror-paper256-noaug.pkl"
    monkeypatch.setenv("STYLECAST_PRESET_URL_FFHQ256", url)
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        load_generator("ffhq256")
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert url in msg and "pass the local file" in msg and "could not download preset 'ffhq256'" in msg
    assert not list(preset_env.glob("*")), "partial download left in the cache"


class _Server:
    def __init__(self, root: Path):
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_preset_downloads_once_then_uses_the_cache(preset_env, monkeypatch, tmp_path, nv_G):
    served = tmp_path / "srv"
    served.mkdir()
    formats.write_nvlabs_pkl(nv_G, served / "net.pkl")
    server = _Server(served)
    try:
        monkeypatch.setenv("STYLECAST_PRESET_URL_FFHQ256", f"{server.url}/net.pkl")
        G = load_generator("ffhq256")
        _assert_same_generator(G, nv_G)
        cached = preset_env / presets.PRESETS["ffhq256"].filename
        assert cached.read_bytes() == (served / "net.pkl").read_bytes()
        record = cached.with_name(cached.name + ".sha256")
        assert sorted(p.name for p in preset_env.iterdir()) == [cached.name, record.name], "no .part files remain"
        assert record.read_text().strip() == hashlib.sha256(cached.read_bytes()).hexdigest()
        assert server.requests == ["/net.pkl"]
    finally:
        server.close()
    # server gone, offline even: the cache answers
    monkeypatch.setenv("STYLECAST_OFFLINE", "1")
    _assert_same_generator(load_generator("ffhq256"), nv_G)
    # a cached file changed since its download (one byte) is refused, not rendered
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x01
    cached.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"cached preset 'ffhq256' has sha256 .* delete it"):
        load_generator("ffhq256")


def test_a_pinned_preset_hash_refuses_a_different_download(preset_env, monkeypatch, tmp_path, nv_G):
    served = tmp_path / "srv"
    served.mkdir()
    formats.write_nvlabs_pkl(nv_G, served / "net.pkl")
    good = hashlib.sha256((served / "net.pkl").read_bytes()).hexdigest()
    server = _Server(served)
    try:
        monkeypatch.setenv("STYLECAST_PRESET_URL_FFHQ512", f"{server.url}/net.pkl")
        monkeypatch.setitem(presets.PRESETS, "ffhq512", dataclasses.replace(presets.PRESETS["ffhq512"], sha256="0" * 64))
        with pytest.raises(CheckpointError, match=r"not the pinned 0{64}; it was not kept"):
            load_generator("ffhq512")
        assert not list(preset_env.glob("*"))
        monkeypatch.setitem(presets.PRESETS, "ffhq512", dataclasses.replace(presets.PRESETS["ffhq512"], sha256=good))
        _assert_same_generator(load_generator("ffhq512"), nv_G)
    finally:
        server.close()


def test_expect_sha256_refuses_a_flipped_byte_the_pickle_reader_accepts(tmp_path, nv_G):
    """A byte flipped inside a tensor of an NVlabs pickle still reads (no hash in that format);
    ``expect_sha256`` (``--expect-sha256``) is what catches it."""
    path = formats.write_nvlabs_pkl(nv_G, tmp_path / "net.pkl")
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    load_generator(path, expect_sha256=good)
    data = bytearray(path.read_bytes())
    data[int(len(data) * 0.6)] ^= 0x10
    path.write_bytes(bytes(data))
    load_generator(path)                                   # the format itself cannot tell
    with pytest.raises(CheckpointError, match=r"does not match --expect-sha256"):
        load_generator(path, expect_sha256=good)
    with pytest.raises(ValueError, match="64 hex digits"):
        load_generator(path, expect_sha256="abc")


def test_stylecast_files_carry_and_check_their_tensor_hash(tmp_path, nv_G):
    path = save_generator(nv_G, tmp_path / "g.safetensors")
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert len(f.metadata()["stylecast_tensors_sha256"]) == 64
    load_generator(path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01                                     # inside the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the sha256 recorded in the file"):
        load_generator(path)


def test_preset_http_error_is_reported(preset_env, monkeypatch, tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    server = _Server(served)
    try:
        monkeypatch.setenv("STYLECAST_PRESET_URL_FFHQ1024", f"{server.url}/missing.pkl")
        with pytest.raises(CheckpointError, match=r"could not download preset 'ffhq1024' .*404"):
            load_generator("ffhq1024")
    finally:
        server.close()
    assert not list(preset_env.glob("*"))


def test_corrupt_cached_preset_says_how_to_refetch(preset_env):
    preset_env.mkdir(parents=True)
    (preset_env / presets.PRESETS["ffhq512"].filename).write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="delete the file to fetch it again"):
        load_generator("ffhq512")


def test_preset_table_points_at_official_nvlabs_pickles():
    assert presets.PRESET_NAMES == ("demo", "random", "ffhq256", "ffhq512", "ffhq1024")
    for name, p in presets.PRESETS.items():
        assert p.url.startswith("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/")
        assert p.url.endswith("/" + p.filename)


# ---------------------------------------------------------------------------------------------
# The writers' own contract


def test_reference_kwargs_and_their_refusals():
    kw = formats.nvlabs_init_kwargs(NV_CFG)
    assert kw["synthesis_kwargs"]["channel_base"] == 128 and kw["synthesis_kwargs"]["channel_max"] == 16
    assert kw["mapping_kwargs"] == {"num_layers": 2}
    full = GeneratorConfig.nvlabs(img_resolution=256, channel_base=16384)
    assert formats.nvlabs_init_kwargs(full)["synthesis_kwargs"]["channel_base"] == 16384
    assert formats.rosinality_kwargs(ROS_CFG) == dict(size=8, style_dim=8, n_mlp=2, channel_multiplier=2, lr_mlp=0.01)
    cm1 = GeneratorConfig.rosinality(size=128, style_dim=8, n_mlp=2, channel_multiplier=1)
    assert formats.rosinality_kwargs(cm1)["channel_multiplier"] == 1
    with pytest.raises(ValueError, match="demod_weight_gain"):
        formats.nvlabs_init_kwargs(ROS_CFG)
    with pytest.raises(ValueError, match="demod_weight_gain"):
        formats.rosinality_kwargs(NV_CFG)
    odd = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, channels={4: 16, 8: 12, 16: 16})
    with pytest.raises(ValueError, match="channel_base"):
        formats.nvlabs_init_kwargs(odd)
    with pytest.raises(ValueError, match="truncation_cutoff"):
        formats.nvlabs_init_kwargs(copy.replace(NV_CFG, truncation_cutoff=4) if hasattr(copy, "replace")
                                   else GeneratorConfig(**{**NV_CFG.__dict__, "truncation_cutoff": 4}))
    narrow = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, channels={4: 64, 8: 64}, demod_weight_gain=True)
    with pytest.raises(ValueError, match="rosinality's table"):
        formats.rosinality_kwargs(narrow)
