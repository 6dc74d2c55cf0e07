"""Test-side writers of the real on-disk generator formats (never imported by the engine).

* :func:`random_generator` — a :class:`Generator` whose every parameter and buffer is random and
  non-trivial, so a loader that drops or misplaces one tensor changes the image.
* :func:`write_nvlabs_pkl` — the stylegan2-ada-pytorch network-pickle layout, byte for byte in
  structure: ``dict(training_set_kwargs, G, D, G_ema, augment_pipe)`` whose networks are
  persistent objects as ``torch_utils.persistence`` pickles them (module ``training.networks``,
  the NVlabs class names, ``state`` = the ``Module.__dict__`` with ``_parameters``, ``_buffers``,
  ``_modules``, the layer attributes, ``_init_args``, ``_init_kwargs`` and the
  ``resample_filter`` buffers), with tensors pickled by plain ``pickle`` as CPU torch tensors.
* :func:`write_rosinality_pt` — ``torch.save`` of a rosinality stylegan2-pytorch checkpoint
  (``g_ema`` in its naming and shapes, ``latent_avg``; optionally the ``train.py`` extras).
* :func:`nvlabs_init_kwargs` / :func:`rosinality_kwargs` — constructor arguments of the
  reference implementations for a :class:`GeneratorConfig`; ``ValueError`` if there is no exact
  equivalent.

The pickles name the true NVlabs globals (``torch_utils.persistence._reconstruct_persistent_obj``,
``dnnlib.util.EasyDict``): while a pickle is written, small stand-in modules are registered
under those names in ``sys.modules`` and removed again afterwards. ``module_src`` is a short
placeholder, not NVlabs source.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from engine.synthesis.networks import Generator, GeneratorConfig

__all__ = [
    "random_generator",
    "nvlabs_init_kwargs",
    "rosinality_kwargs",
    "write_nvlabs_pkl",
    "nvlabs_snapshot",
    "write_rosinality_pt",
    "PersistentObj",
    "nvlabs_globals",
    "dump_nvlabs_pickle",
]

NVLABS_MODULE_SRC = "# placeholder for the source of training/networks.py (never executed by StyleCast)\n"
PERSISTENCE_VERSION = 6


# ---------------------------------------------------------------------------------------------
# Random weights


def random_generator(config: GeneratorConfig, seed: int) -> Generator:
    """A Generator with every parameter and buffer drawn from ``np.random.RandomState(seed)``.

    Raw-weight conventions as in training: unit-normal weights (mapping weights divided by the
    lr multiplier), non-zero biases, affine biases around 1, noise strengths in [0.1, 0.5],
    unit-normal ``noise_const``, non-zero ``w_avg``. Tensors are filled in sorted name order.
    """
    G = Generator(config)
    rs = np.random.RandomState(seed)
    lr = float(config.mapping_lr_multiplier)
    with torch.no_grad():
        for name, t in sorted(G.state_dict().items()):
            shape = tuple(t.shape)
            if name.startswith("mapping.fc") and name.endswith(".weight"):
                v = rs.randn(*shape) / lr
            elif name.startswith("mapping.fc") and name.endswith(".bias"):
                v = 0.2 * rs.randn(*shape) / lr
            elif name == "mapping.w_avg":
                v = 0.5 * rs.randn(*shape)
            elif name.endswith("affine.bias"):
                v = 1.0 + 0.2 * rs.randn(*shape)
            elif name.endswith("noise_strength"):
                v = rs.uniform(0.1, 0.5, size=shape)
            elif name.endswith(".bias"):
                v = 0.2 * rs.randn(*shape)
            else:  # conv / affine / toRGB weights, const, noise_const
                v = rs.randn(*shape)
            t.copy_(torch.from_numpy(np.asarray(v, dtype=np.float64).reshape(shape)))
    return G


# ---------------------------------------------------------------------------------------------
# Constructor arguments of the reference implementations


def _nvlabs_channel_params(channels: dict[int, int]) -> tuple[int, int]:
    cmax = max(channels.values())
    top = max(channels)
    candidates = {32768, 16384, cmax * top} | {c * r for r, c in channels.items()}
    for base in sorted(candidates, key=lambda b: (b != 32768, b != 16384, b)):
        if all(min(base // r, cmax) == c for r, c in channels.items()):
            return base, cmax
    raise ValueError(f"channels {channels} are not min(channel_base // res, channel_max) for any channel_base")


def nvlabs_init_kwargs(config: GeneratorConfig) -> dict:
    """Keyword arguments of NVlabs ``training.networks.Generator`` for ``config``.

    As NVlabs ``train.py`` passes them: ``z_dim``, ``w_dim``, ``mapping_kwargs``,
    ``synthesis_kwargs`` (``channel_base``, ``channel_max``, ``num_fp16_res=0`` so the reference
    runs in float32, ``conv_clamp``), then ``c_dim``, ``img_resolution``, ``img_channels``.
    Raises ValueError if NVlabs cannot express the config exactly.
    """
    if config.demod_weight_gain:
        raise ValueError("NVlabs demodulates the raw weight; config has demod_weight_gain=True (rosinality)")
    if config.truncation_cutoff is not None:
        raise ValueError("NVlabs network pickles do not store a default truncation_cutoff")
    if config.c_dim != 0 or config.architecture != "skip":
        raise ValueError("only unconditional skip generators are written")
    base, cmax = _nvlabs_channel_params(config.channels)
    mapping_kwargs: dict[str, Any] = {"num_layers": config.mapping_layers}
    if config.mapping_lr_multiplier != 0.01:
        mapping_kwargs["lr_multiplier"] = config.mapping_lr_multiplier
    synthesis_kwargs: dict[str, Any] = {
        "channel_base": base,
        "channel_max": cmax,
        "num_fp16_res": 0,
        "conv_clamp": config.conv_clamp,
    }
    if not config.use_noise:
        synthesis_kwargs["use_noise"] = False
    return {
        "z_dim": config.z_dim,
        "w_dim": config.w_dim,
        "mapping_kwargs": mapping_kwargs,
        "synthesis_kwargs": synthesis_kwargs,
        "c_dim": 0,
        "img_resolution": config.img_resolution,
        "img_channels": config.img_channels,
    }


def rosinality_kwargs(config: GeneratorConfig) -> dict:
    """``size, style_dim, n_mlp, channel_multiplier, lr_mlp`` of rosinality ``model.Generator``.

    Raises ValueError if rosinality cannot express the config exactly (its channel table is
    fixed, z_dim == w_dim, RGB only, no clamp, noise always on, demodulation of the scaled weight).
    """
    problems = []
    if not config.demod_weight_gain:
        problems.append("demod_weight_gain=False (rosinality demodulates the gain-scaled weight)")
    if config.z_dim != config.w_dim:
        problems.append("z_dim != w_dim")
    if config.img_channels != 3:
        problems.append("img_channels != 3")
    if config.conv_clamp is not None:
        problems.append("conv_clamp is set")
    if not config.use_noise:
        problems.append("use_noise=False")
    if config.truncation_cutoff is not None:
        problems.append("truncation_cutoff is set (rosinality truncates every layer)")
    size = config.img_resolution
    multiplier = 2
    if size >= 64:
        multiplier, rem = divmod(config.channels[64], 256)
        if rem or multiplier < 1:
            problems.append(f"channels[64]={config.channels[64]} is not 256 * channel_multiplier")
            multiplier = 1
    if not problems:
        table = GeneratorConfig.rosinality(size=size, style_dim=config.w_dim, n_mlp=config.mapping_layers,
                                           channel_multiplier=multiplier).channels
        if table != config.channels:
            problems.append(f"channels {config.channels} are not rosinality's table {table}")
    if problems:
        raise ValueError("no exact rosinality equivalent: " + "; ".join(problems))
    return {
        "size": size,
        "style_dim": config.w_dim,
        "n_mlp": config.mapping_layers,
        "channel_multiplier": multiplier,
        "lr_mlp": config.mapping_lr_multiplier,
    }


# ---------------------------------------------------------------------------------------------
# NVlabs network pickle


def _reconstruct_persistent_obj(meta):  # pragma: no cover - only its name is pickled
    raise RuntimeError("StyleCast test stand-in; NVlabs code would exec meta['module_src'] here")


class EasyDict(dict):
    """Pickles as ``dnnlib.util.EasyDict`` (a dict subclass, like the original)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict.__module__ = "dnnlib.util"


@contextlib.contextmanager
def nvlabs_globals() -> Iterator[None]:
    """Register stand-in ``torch_utils.persistence`` and ``dnnlib.util`` modules while pickling."""
    names = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}
    mods["torch_utils"].persistence = mods["torch_utils.persistence"]
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib"].util = mods["dnnlib.util"]
    mods["dnnlib"].EasyDict = EasyDict
    mods["dnnlib.util"].EasyDict = EasyDict
    sys.modules.update(mods)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class PersistentObj:
    """Pickles exactly as an NVlabs ``@persistent_class`` instance does:
    ``_reconstruct_persistent_obj(dict(type='class', version, module_src, class_name, state))``."""

    def __init__(self, class_name: str, state: dict, module_src: str | None = None):
        self.class_name = class_name
        self.state = state
        self.module_src = module_src  # None: NVLABS_MODULE_SRC at pickling time

    def __reduce__(self):
        src = NVLABS_MODULE_SRC if self.module_src is None else self.module_src
        meta = dict(type="class", version=PERSISTENCE_VERSION, module_src=src,
                    class_name=self.class_name, state=self.state)
        return (_reconstruct_persistent_obj, (meta,))


def dump_nvlabs_pickle(obj: Any, path: str | os.PathLike, *, protocol: int = 3) -> Path:
    """``pickle.dump`` with the NVlabs global names resolvable (see :func:`nvlabs_globals`)."""
    path = Path(path)
    with nvlabs_globals(), open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def _module_dict(training: bool = False) -> dict:
    """``torch.nn.Module.__dict__`` right after ``Module.__init__`` (torch 1.7, which NVlabs used)."""
    return {
        "training": training,
        "_parameters": OrderedDict(),
        "_buffers": OrderedDict(),
        "_non_persistent_buffers_set": set(),
        "_backward_hooks": OrderedDict(),
        "_forward_hooks": OrderedDict(),
        "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(),
        "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(),
    }


class _Builder:
    """Builds the persistent-object tree of an NVlabs Generator from our state dict."""

    def __init__(self, sd: dict[str, torch.Tensor], offset: float = 0.0):
        self.sd = sd
        self.offset = offset
        self.used: set[str] = set()

    def param(self, key: str) -> torch.nn.Parameter:
        self.used.add(key)
        return torch.nn.Parameter(self.sd[key].detach().float().clone() + self.offset, requires_grad=False)

    def buffer(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return self.sd[key].detach().float().clone() + self.offset

    @staticmethod
    def resample_filter() -> torch.Tensor:
        f = torch.tensor([1.0, 3.0, 3.0, 1.0])
        f = f.ger(f)
        return f / f.sum()

    @staticmethod
    def obj(class_name: str, state: dict, args: tuple, kwargs: dict) -> PersistentObj:
        state["_init_args"] = copy.deepcopy(args)
        state["_init_kwargs"] = copy.deepcopy(kwargs)
        return PersistentObj(class_name, state)

    def fc(self, prefix: str, in_features: int, out_features: int, **kwargs) -> PersistentObj:
        activation = kwargs.get("activation", "linear")
        lr = kwargs.get("lr_multiplier", 1)
        st = _module_dict()
        st["activation"] = activation
        st["_parameters"]["weight"] = self.param(prefix + "weight")
        st["_parameters"]["bias"] = self.param(prefix + "bias")
        st["weight_gain"] = lr / np.sqrt(in_features)
        st["bias_gain"] = lr
        return self.obj("FullyConnectedLayer", st, (in_features, out_features), kwargs)

    def layer(self, prefix: str, in_ch: int, out_ch: int, *, w_dim: int, resolution: int, up: int,
              conv_clamp, use_noise: bool, layer_kwargs: dict) -> PersistentObj:
        st = _module_dict()
        st["resolution"] = resolution
        st["up"] = up
        st["use_noise"] = use_noise
        st["activation"] = "lrelu"
        st["conv_clamp"] = conv_clamp
        st["_buffers"]["resample_filter"] = self.resample_filter()
        st["padding"] = 1
        st["act_gain"] = np.sqrt(2)
        st["_modules"]["affine"] = self.fc(prefix + "affine.", w_dim, in_ch, bias_init=1)
        st["_parameters"]["weight"] = self.param(prefix + "weight")
        if use_noise:
            st["_buffers"]["noise_const"] = self.buffer(prefix + "noise_const")
            st["_parameters"]["noise_strength"] = self.param(prefix + "noise_strength")
        st["_parameters"]["bias"] = self.param(prefix + "bias")
        kwargs = dict(w_dim=w_dim, resolution=resolution)
        if up != 1:
            kwargs.update(up=up, resample_filter=[1, 3, 3, 1])
        kwargs.update(conv_clamp=conv_clamp, channels_last=False, **layer_kwargs)
        return self.obj("SynthesisLayer", st, (in_ch, out_ch), kwargs)

    def torgb(self, prefix: str, in_ch: int, img_channels: int, *, w_dim: int, conv_clamp) -> PersistentObj:
        st = _module_dict()
        st["conv_clamp"] = conv_clamp
        st["_modules"]["affine"] = self.fc(prefix + "affine.", w_dim, in_ch, bias_init=1)
        st["_parameters"]["weight"] = self.param(prefix + "weight")
        st["_parameters"]["bias"] = self.param(prefix + "bias")
        st["weight_gain"] = 1 / np.sqrt(in_ch * 1)
        kwargs = dict(w_dim=w_dim, conv_clamp=conv_clamp, channels_last=False)
        return self.obj("ToRGBLayer", st, (in_ch, img_channels), kwargs)

    def generator(self, config: GeneratorConfig, kw: dict) -> PersistentObj:
        res_list = config.resolutions
        ch = config.channels
        sk = dict(kw["synthesis_kwargs"])
        mk = dict(kw["mapping_kwargs"])
        num_fp16_res = sk.get("num_fp16_res", 0)
        log2 = int(np.log2(config.img_resolution))
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        block_kwargs = {k: v for k, v in sk.items() if k not in ("channel_base", "channel_max", "num_fp16_res")}
        conv_clamp = block_kwargs.get("conv_clamp")
        layer_kwargs = {k: v for k, v in block_kwargs.items()
                        if k not in ("architecture", "resample_filter", "conv_clamp", "use_fp16", "fp16_channels_last")}
        use_noise = layer_kwargs.get("use_noise", True)

        syn = _module_dict()
        syn["w_dim"] = config.w_dim
        syn["img_resolution"] = config.img_resolution
        syn["img_resolution_log2"] = log2
        syn["img_channels"] = config.img_channels
        syn["block_resolutions"] = list(res_list)
        syn["num_ws"] = 0
        for res in res_list:
            p = f"synthesis.b{res}."
            in_ch = ch[res // 2] if res > 4 else 0
            out_ch = ch[res]
            is_last = res == config.img_resolution
            use_fp16 = res >= fp16_resolution
            blk = _module_dict()
            blk["in_channels"] = in_ch
            blk["w_dim"] = config.w_dim
            blk["resolution"] = res
            blk["img_channels"] = config.img_channels
            blk["is_last"] = is_last
            blk["architecture"] = "skip"
            blk["use_fp16"] = use_fp16
            blk["channels_last"] = False
            blk["_buffers"]["resample_filter"] = self.resample_filter()
            blk["num_conv"] = 0
            blk["num_torgb"] = 0
            lk = dict(w_dim=config.w_dim, resolution=res, conv_clamp=conv_clamp, use_noise=use_noise,
                      layer_kwargs=layer_kwargs)
            if in_ch == 0:
                blk["_parameters"]["const"] = self.param(p + "const")
            else:
                blk["_modules"]["conv0"] = self.layer(p + "conv0.", in_ch, out_ch, up=2, **lk)
                blk["num_conv"] += 1
            blk["_modules"]["conv1"] = self.layer(p + "conv1.", out_ch, out_ch, up=1, **lk)
            blk["num_conv"] += 1
            blk["_modules"]["torgb"] = self.torgb(p + "torgb.", out_ch, config.img_channels,
                                                  w_dim=config.w_dim, conv_clamp=conv_clamp)
            blk["num_torgb"] += 1
            blk_kwargs = dict(w_dim=config.w_dim, resolution=res, img_channels=config.img_channels,
                              is_last=is_last, use_fp16=use_fp16, **block_kwargs)
            syn["_modules"][f"b{res}"] = self.obj("SynthesisBlock", blk, (in_ch, out_ch), blk_kwargs)
            syn["num_ws"] += blk["num_conv"] + (blk["num_torgb"] if is_last else 0)
        num_ws = syn["num_ws"]
        syn_obj = self.obj("SynthesisNetwork", syn, (), dict(w_dim=config.w_dim, img_resolution=config.img_resolution,
                                                              img_channels=config.img_channels, **sk))

        mp = _module_dict()
        mp["z_dim"] = config.z_dim
        mp["c_dim"] = 0
        mp["w_dim"] = config.w_dim
        mp["num_ws"] = num_ws
        mp["num_layers"] = config.mapping_layers
        mp["w_avg_beta"] = 0.995
        features = [config.z_dim] + [config.w_dim] * config.mapping_layers
        lr = mk.get("lr_multiplier", 0.01)
        for i in range(config.mapping_layers):
            mp["_modules"][f"fc{i}"] = self.fc(f"mapping.fc{i}.", features[i], features[i + 1],
                                               activation="lrelu", lr_multiplier=lr)
        mp["_buffers"]["w_avg"] = self.buffer("mapping.w_avg")
        map_obj = self.obj("MappingNetwork", mp, (), dict(z_dim=config.z_dim, c_dim=0, w_dim=config.w_dim,
                                                           num_ws=num_ws, **mk))

        gen = _module_dict()
        gen["z_dim"] = config.z_dim
        gen["c_dim"] = 0
        gen["w_dim"] = config.w_dim
        gen["img_resolution"] = config.img_resolution
        gen["img_channels"] = config.img_channels
        gen["_modules"]["synthesis"] = syn_obj
        gen["num_ws"] = num_ws
        gen["_modules"]["mapping"] = map_obj
        gen_kwargs = dict(kw)
        gen_kwargs["mapping_kwargs"] = EasyDict(mk)
        gen_kwargs["synthesis_kwargs"] = EasyDict(sk)
        return self.obj("Generator", gen, (), gen_kwargs)


def _small_discriminator(config: GeneratorConfig, seed: int) -> PersistentObj:
    """A token ``D`` (epilogue only): real snapshots hold one, loaders must ignore it."""
    g = torch.Generator().manual_seed(seed)
    c = config.channels[4]
    fc_state = _module_dict()
    fc_state["activation"] = "linear"
    fc_state["_parameters"]["weight"] = torch.nn.Parameter(torch.randn(1, c, generator=g), requires_grad=False)
    fc_state["_parameters"]["bias"] = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
    fc_state["weight_gain"] = 1 / np.sqrt(c)
    fc_state["bias_gain"] = 1
    out = _Builder.obj("FullyConnectedLayer", fc_state, (c, 1), {})
    epi = _module_dict()
    epi["in_channels"] = c
    epi["resolution"] = 4
    epi["_modules"]["out"] = out
    b4 = _Builder.obj("DiscriminatorEpilogue", epi, (c,), dict(cmap_dim=0, resolution=4, img_channels=config.img_channels))
    d = _module_dict()
    d["c_dim"] = 0
    d["img_resolution"] = config.img_resolution
    d["img_channels"] = config.img_channels
    d["_modules"]["b4"] = b4
    return _Builder.obj("Discriminator", d, (), dict(c_dim=0, img_resolution=config.img_resolution,
                                                     img_channels=config.img_channels))


def nvlabs_discriminator(D) -> PersistentObj:
    """An NVlabs ``Discriminator`` tree (architecture 'resnet', unconditional) holding the weights of
    our :class:`engine.synthesis.discriminator.Discriminator` ``D``, laid out as
    stylegan2-ada-pytorch's training/networks.py builds it (resample_filter buffers included)."""
    cfg = D.config
    sd = D.state_dict()
    b = _Builder(sd)

    def conv(prefix: str, in_ch: int, out_ch: int, k: int, *, bias: bool = True, activation: str = "linear",
             down: int = 1, conv_clamp=None) -> PersistentObj:
        st = _module_dict()
        st.update(activation=activation, up=1, down=down, conv_clamp=conv_clamp, padding=k // 2,
                  weight_gain=1 / np.sqrt(in_ch * k * k), act_gain=np.sqrt(2) if activation == "lrelu" else 1.0)
        st["_buffers"]["resample_filter"] = _Builder.resample_filter()
        st["_parameters"]["weight"] = b.param(prefix + "weight")
        st["_parameters"]["bias"] = b.param(prefix + "bias") if bias else None
        return _Builder.obj("Conv2dLayer", st, (in_ch, out_ch), dict(kernel_size=k, bias=bias, activation=activation,
                                                                    down=down, conv_clamp=conv_clamp))

    root = _module_dict()
    root.update(c_dim=0, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels)
    ch, clamp = cfg.channels, cfg.conv_clamp
    for i, res in enumerate(D.block_resolutions):
        blk = _module_dict()
        in_ch = 0 if i == 0 else ch[res]
        blk.update(in_channels=in_ch, resolution=res, img_channels=cfg.img_channels, architecture="resnet")
        blk["_buffers"]["resample_filter"] = _Builder.resample_filter()
        if in_ch == 0:
            blk["_modules"]["fromrgb"] = conv(f"b{res}.fromrgb.", cfg.img_channels, ch[res], 1, activation="lrelu",
                                              conv_clamp=clamp)
        blk["_modules"]["conv0"] = conv(f"b{res}.conv0.", ch[res], ch[res], 3, activation="lrelu", conv_clamp=clamp)
        blk["_modules"]["conv1"] = conv(f"b{res}.conv1.", ch[res], ch[res // 2], 3, activation="lrelu", down=2,
                                        conv_clamp=clamp)
        blk["_modules"]["skip"] = conv(f"b{res}.skip.", ch[res], ch[res // 2], 1, bias=False, down=2)
        root["_modules"][f"b{res}"] = _Builder.obj("DiscriminatorBlock", blk, (in_ch, ch[res], ch[res // 2]),
                                                   dict(resolution=res, img_channels=cfg.img_channels,
                                                        architecture="resnet", conv_clamp=clamp))
    epi = _module_dict()
    epi.update(in_channels=ch[4], cmap_dim=0, resolution=4, img_channels=cfg.img_channels, architecture="resnet")
    mb = _module_dict()
    mb.update(group_size=cfg.mbstd_group_size, num_channels=cfg.mbstd_num_channels)
    epi["_modules"]["mbstd"] = _Builder.obj("MinibatchStdLayer", mb, (), dict(group_size=cfg.mbstd_group_size,
                                                                             num_channels=cfg.mbstd_num_channels))
    epi["_modules"]["conv"] = conv("b4.conv.", ch[4] + cfg.mbstd_num_channels, ch[4], 3, activation="lrelu",
                                   conv_clamp=clamp)
    epi["_modules"]["fc"] = b.fc("b4.fc.", ch[4] * 16, ch[4], activation="lrelu")
    epi["_modules"]["out"] = b.fc("b4.out.", ch[4], 1)
    root["_modules"]["b4"] = _Builder.obj("DiscriminatorEpilogue", epi, (ch[4],), dict(
        cmap_dim=0, resolution=4, img_channels=cfg.img_channels, architecture="resnet", conv_clamp=clamp,
        mbstd_group_size=cfg.mbstd_group_size, mbstd_num_channels=cfg.mbstd_num_channels))
    unused = set(sd) - b.used
    if unused:
        raise RuntimeError(f"writer did not place tensors {sorted(unused)}")
    return _Builder.obj("Discriminator", root, (), dict(
        c_dim=0, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels, architecture="resnet",
        channel_base=32768, channel_max=512, conv_clamp=clamp, block_kwargs={}, mapping_kwargs={},
        epilogue_kwargs=dict(mbstd_group_size=cfg.mbstd_group_size, mbstd_num_channels=cfg.mbstd_num_channels)))


def nvlabs_snapshot(G: Generator) -> dict:
    """The object a stylegan2-ada-pytorch training loop pickles, for ``G``'s weights:
    ``dict(training_set_kwargs, G, D, G_ema, augment_pipe)`` of :class:`PersistentObj` trees.

    ``G_ema`` holds ``G``'s weights; the training ``G`` is a separate tree with every tensor
    shifted by 0.5 (so a loader that reads ``G`` instead of ``G_ema`` is caught) and ``D`` is a
    token discriminator. Tests may edit the trees before :func:`dump_nvlabs_pickle`.
    """
    kw = nvlabs_init_kwargs(G.config)
    sd = G.state_dict()
    ema_builder = _Builder(sd)
    G_ema = ema_builder.generator(G.config, kw)
    unused = set(sd) - ema_builder.used
    if unused:
        raise RuntimeError(f"writer did not place tensors {sorted(unused)}")
    G_train = _Builder(sd, offset=0.5).generator(G.config, kw)
    return dict(
        training_set_kwargs=dict(class_name="training.dataset.ImageFolderDataset", path="~/datasets/ffhq.zip",
                                 use_labels=False, max_size=70000, xflip=True, resolution=G.config.img_resolution),
        G=G_train,
        D=_small_discriminator(G.config, seed=1),
        G_ema=G_ema,
        augment_pipe=None,
    )


def write_nvlabs_pkl(G: Generator, path: str | os.PathLike, *, protocol: int = 3) -> Path:
    """Write ``G`` as a stylegan2-ada-pytorch network snapshot (``network-snapshot-*.pkl``);
    see :func:`nvlabs_snapshot`. ``protocol=3`` is what NVlabs' Python 3.7 wrote."""
    return dump_nvlabs_pickle(nvlabs_snapshot(G), path, protocol=protocol)


# ---------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch


def _blur_kernel() -> torch.Tensor:
    """rosinality ``make_kernel([1, 3, 3, 1]) * 2**2`` (Blur / Upsample buffers, factor 2)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum() * 4


def _rosinality_g_ema(G: Generator, kw: dict, offset: float = 0.0) -> OrderedDict:
    sd = {k: v.detach().float().clone() + offset for k, v in G.state_dict().items()}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for i in range(kw["n_mlp"]):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]

    def styled(theirs: str, ours: str, upsample: bool) -> None:
        out[f"{theirs}.conv.weight"] = sd[f"{ours}.weight"][None]
        if upsample:
            out[f"{theirs}.conv.blur.kernel"] = _blur_kernel()
        out[f"{theirs}.conv.modulation.weight"] = sd[f"{ours}.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"{ours}.affine.bias"]
        out[f"{theirs}.noise.weight"] = sd[f"{ours}.noise_strength"].reshape(1)
        out[f"{theirs}.activate.bias"] = sd[f"{ours}.bias"]

    def to_rgb(theirs: str, ours: str, upsample: bool) -> None:
        out[f"{theirs}.bias"] = sd[f"{ours}.bias"].reshape(1, -1, 1, 1)
        if upsample:
            out[f"{theirs}.upsample.kernel"] = _blur_kernel()
        out[f"{theirs}.conv.weight"] = sd[f"{ours}.weight"][None]
        out[f"{theirs}.conv.modulation.weight"] = sd[f"{ours}.affine.weight"]
        out[f"{theirs}.conv.modulation.bias"] = sd[f"{ours}.affine.bias"]

    styled("conv1", "synthesis.b4.conv1", False)
    to_rgb("to_rgb1", "synthesis.b4.torgb", False)
    later = G.config.resolutions[1:]
    for k, res in enumerate(later):
        styled(f"convs.{2 * k}", f"synthesis.b{res}.conv0", True)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", False)
    for k, res in enumerate(later):
        to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb", True)
    out["noises.noise_0"] = sd["synthesis.b4.conv1.noise_const"][None, None]
    for k, res in enumerate(later):
        out[f"noises.noise_{2 * k + 1}"] = sd[f"synthesis.b{res}.conv0.noise_const"][None, None]
        out[f"noises.noise_{2 * k + 2}"] = sd[f"synthesis.b{res}.conv1.noise_const"][None, None]
    return out


def _adam_state(shapes: list[tuple], seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    opt = torch.optim.Adam(params, lr=0.002 * 4 / 5, betas=(0.0, 0.99 ** (4 / 5)))
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()
    return opt.state_dict()


def write_rosinality_pt(
    G: Generator,
    path: str | os.PathLike,
    *,
    train_ckpt: bool = False,
    include_latent_avg: bool = True,
    legacy_format: bool = False,
) -> Path:
    """``torch.save`` a rosinality stylegan2-pytorch checkpoint of ``G``.

    Always ``g_ema`` (rosinality names and shapes, with the ``noises.noise_i`` and blur/upsample
    kernel buffers) and, unless ``include_latent_avg=False``, ``latent_avg`` (as
    ``convert_weight.py`` writes it). ``train_ckpt=True`` adds what its ``train.py`` saves:
    ``g`` (weights shifted by 0.5, so reading ``g`` instead of ``g_ema`` is caught), ``d``,
    ``g_optim`` / ``d_optim`` (real Adam state dicts), ``args`` (``argparse.Namespace``) and
    ``ada_aug_p``. ``train.py`` itself stores no ``latent_avg``: pass ``include_latent_avg=False``
    for that exact layout. ``legacy_format=True`` writes the pre-1.6 torch serialisation.
    """
    kw = rosinality_kwargs(G.config)
    ckpt: dict[str, Any] = {}
    if train_ckpt:
        ckpt["g"] = _rosinality_g_ema(G, kw, offset=0.5)
        g = torch.Generator().manual_seed(2)
        ckpt["d"] = OrderedDict(
            [
                ("convs.0.0.weight", torch.randn(32, 3, 1, 1, generator=g)),
                ("convs.0.1.bias", torch.zeros(32)),
                ("final_linear.0.weight", torch.randn(32, 64, generator=g)),
                ("final_linear.0.bias", torch.zeros(32)),
            ]
        )
    ckpt["g_ema"] = _rosinality_g_ema(G, kw)
    if train_ckpt:
        ckpt["g_optim"] = _adam_state([(4, 3), (4,)], seed=3)
        ckpt["d_optim"] = _adam_state([(2, 2)], seed=4)
        ckpt["args"] = argparse.Namespace(
            path="/data/ffhq_lmdb", arch="stylegan2", iter=800000, batch=16, n_sample=64, size=kw["size"],
            r1=10.0, path_regularize=2.0, path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9,
            ckpt=None, lr=0.002, channel_multiplier=kw["channel_multiplier"], wandb=False, local_rank=0,
            augment=False, augment_p=0.0, ada_target=0.6, ada_length=500000, ada_every=256,
            distributed=False, latent=kw["style_dim"], n_mlp=kw["n_mlp"], start_iter=0,
        )
        ckpt["ada_aug_p"] = 0.0
    if include_latent_avg:
        ckpt["latent_avg"] = G.mapping.w_avg.detach().float().clone()
    path = Path(path)
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)
    return path
