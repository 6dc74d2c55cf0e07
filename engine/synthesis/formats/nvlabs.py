"""NVlabs stylegan2-ada-pytorch / stylegan3 network pickles (``network-snapshot-*.pkl``): a pickle
of ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``, read with
:mod:`engine.synthesis.safe_pickle`, which never executes code from the file. ``G_ema`` is used;
its parameters already carry our names."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from engine.synthesis import safe_pickle
from engine.synthesis.formats.common import (
    FORMAT_NVLABS,
    RESAMPLE_FILTER,
    Checkpoint,
    CheckpointError,
    first_line,
    gather,
)
from engine.synthesis.networks import GeneratorConfig

__all__ = ["read_nvlabs", "load_pickle", "flatten_persistent"]

_GENERATOR_INIT_ARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}


def load_pickle(path: Path) -> Any:
    """The pickle's contents, read with :mod:`safe_pickle` (CheckpointError when it cannot be)."""
    try:
        with open(path, "rb") as f:
            data = safe_pickle.safe_load(f)
    except safe_pickle.ForbiddenGlobal as exc:
        hint = ""
        if exc.global_name.startswith("dnnlib.tflib"):
            hint = "; this is a TensorFlow StyleGAN pickle: convert it with NVlabs legacy.py first"
        raise CheckpointError(f"{path}: {exc}{hint}") from None
    except (safe_pickle.UnknownPersistentClass, safe_pickle.PickleLimitError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({first_line(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: corrupt pickle (implausible sizes)") from None
    except Exception as exc:  # a damaged stream can make pickle raise almost anything
        raise CheckpointError(f"{path}: corrupt pickle ({type(exc).__name__}: {first_line(exc)})") from None
    return data


def read_nvlabs(path: Path) -> Checkpoint:
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path}: pickle holds a {type(data).__name__}, not an NVlabs network pickle (a dict with 'G_ema')"
        )
    if "G_ema" not in data:
        keys = ", ".join(repr(k) for k in list(data)[:8])
        raise CheckpointError(f"{path}: pickle has no 'G_ema' network (keys: {keys or 'none'})")
    G = data["G_ema"]
    if not isinstance(G, safe_pickle.PersistentObject) or G.class_name != "Generator":
        what = G.class_name if isinstance(G, safe_pickle.PersistentObject) else type(G).__name__
        raise CheckpointError(f"{path}: 'G_ema' is a {what}, not an NVlabs Generator")

    tensors = flatten_persistent(path, G)
    config, notes = _nvlabs_config(path, G, tensors)
    filters = [k for k in tensors if k.endswith("resample_filter")]
    for key in filters:
        f = tensors[key]
        ok = isinstance(f, torch.Tensor) and tuple(f.shape) == (4, 4) and f.is_floating_point()
        if not ok or not torch.allclose(f.float() / f.float().sum(), RESAMPLE_FILTER, atol=1e-6):
            raise CheckpointError(
                f"{path}: tensor '{key}' is not the [1, 3, 3, 1] resampling filter; other filters are not supported"
            )
    state = gather(path, config, tensors, ignore=filters)
    return Checkpoint(path=path, format=FORMAT_NVLABS, config=config, state=state, notes=notes)


def flatten_persistent(path: Path, root: safe_pickle.PersistentObject) -> dict[str, Any]:
    """``Module.state_dict()`` of a recorded persistent-object tree: parameters and buffers by
    dotted name (non-persistent buffers excluded, as torch does)."""
    out: dict[str, Any] = {}
    seen: set[int] = set()

    def walk(obj: safe_pickle.PersistentObject, prefix: str, depth: int) -> None:
        if depth > 32:
            raise CheckpointError(f"{path}: network nesting too deep")
        if id(obj) in seen:     # a network never holds one layer twice; a memo bomb does
            raise CheckpointError(f"{path}: layer '{prefix.rstrip('.')}' is the same object as another layer")
        seen.add(id(obj))
        skip = obj.state.get("_non_persistent_buffers_set") or set()
        for name, value in obj.parameters.items():
            if value is not None:
                out[prefix + name] = value
        for name, value in obj.buffers.items():
            if value is not None and name not in skip:
                out[prefix + name] = value
        for name, child in obj.modules.items():
            if child is None:
                continue
            if not isinstance(child, safe_pickle.PersistentObject):
                raise CheckpointError(f"{path}: module '{prefix}{name}' is a {type(child).__name__}, not a network layer")
            walk(child, f"{prefix}{name}.", depth + 1)

    walk(root, "", 0)
    return out


def _classes(obj: safe_pickle.PersistentObject) -> set[str]:
    names = {obj.class_name}
    for child in obj.modules.values():
        if isinstance(child, safe_pickle.PersistentObject):
            names |= _classes(child)
    return names


def _nvlabs_config(path: Path, G: safe_pickle.PersistentObject, tensors: dict) -> tuple[GeneratorConfig, list[str]]:
    synthesis = G.modules.get("synthesis")
    mapping = G.modules.get("mapping")
    if not isinstance(synthesis, safe_pickle.PersistentObject) or not isinstance(mapping, safe_pickle.PersistentObject):
        raise CheckpointError(f"{path}: 'G_ema' has no mapping/synthesis networks")
    if "SynthesisInput" in _classes(G) or "input" in synthesis.modules:
        raise CheckpointError(
            f"{path}: StyleGAN3 (alias-free) generators are not supported; use a StyleGAN2 network"
        )

    kw = dict(G.init_kwargs)
    attrs = G.state
    mk = dict(kw.get("mapping_kwargs") or {})
    if "synthesis_kwargs" in kw:  # stylegan2-ada-pytorch: Generator(..., synthesis_kwargs={...})
        sk = dict(kw.get("synthesis_kwargs") or {})
    else:  # stylegan3 repo (networks_stylegan2): Generator(..., **synthesis_kwargs)
        sk = {k: v for k, v in kw.items() if k not in _GENERATOR_INIT_ARGS}

    def pick(name: str, default: Any) -> Any:
        if name in kw:
            return kw[name]
        return attrs.get(name, default)

    c_dim = pick("c_dim", 0)
    if c_dim or "embed" in mapping.modules:
        raise CheckpointError(f"{path}: conditional generators (c_dim={c_dim}) are not supported")

    blocks = sorted(
        (int(name[1:]), blk) for name, blk in synthesis.modules.items()
        if re.fullmatch(r"b\d+", name) and isinstance(blk, safe_pickle.PersistentObject)
    )
    if not blocks:
        raise CheckpointError(f"{path}: synthesis network has no blocks")
    architecture = sk.get("architecture", blocks[-1][1].state.get("architecture", "skip"))
    if architecture != "skip":
        raise CheckpointError(
            f"{path}: synthesis architecture '{architecture}' is not supported (only 'skip', the StyleGAN2 default)"
        )
    for key, default in (("activation", "lrelu"), ("kernel_size", 3)):
        if sk.get(key, default) != default:
            raise CheckpointError(f"{path}: synthesis {key}={sk[key]!r} is not supported")
    if mk.get("activation", "lrelu") != "lrelu":
        raise CheckpointError(f"{path}: mapping activation={mk['activation']!r} is not supported")
    if sk.get("resample_filter", [1, 3, 3, 1]) not in ([1, 3, 3, 1], (1, 3, 3, 1)):
        raise CheckpointError(f"{path}: resample_filter={sk['resample_filter']!r} is not supported")

    img_resolution = pick("img_resolution", blocks[-1][0])
    w_dim = pick("w_dim", None)
    z_dim = pick("z_dim", None)
    fc0 = tensors.get("mapping.fc0.weight")
    if z_dim is None and isinstance(fc0, torch.Tensor) and fc0.ndim == 2:
        z_dim = int(fc0.shape[1])
    w_avg = tensors.get("mapping.w_avg")
    if w_dim is None and isinstance(w_avg, torch.Tensor) and w_avg.ndim == 1:
        w_dim = int(w_avg.shape[0])
    layer_features = mk.get("layer_features")
    if layer_features is not None and layer_features != w_dim:
        raise CheckpointError(f"{path}: mapping layer_features={layer_features} != w_dim={w_dim} is not supported")

    if "channel_base" in sk or "channel_max" in sk:
        base, cmax = int(sk.get("channel_base", 32768)), int(sk.get("channel_max", 512))
        channels = {res: min(base // res, cmax) for res, _ in blocks}
    else:  # no kwargs recorded: read the widths off the tensors
        channels = {}
        for res, _ in blocks:
            t = tensors.get(f"synthesis.b{res}.conv1.weight")
            channels[res] = int(t.shape[0]) if isinstance(t, torch.Tensor) and t.ndim == 4 else 0

    first_fc = mapping.modules.get("fc0")
    lr_default = first_fc.state.get("bias_gain", 0.01) if isinstance(first_fc, safe_pickle.PersistentObject) else 0.01
    layer0 = blocks[0][1].modules.get("conv1")
    layer_attrs = layer0.state if isinstance(layer0, safe_pickle.PersistentObject) else {}
    img_channels = pick("img_channels", 3)
    torgb = tensors.get(f"synthesis.b{img_resolution}.torgb.weight")
    if "img_channels" not in kw and "img_channels" not in attrs and isinstance(torgb, torch.Tensor):
        img_channels = int(torgb.shape[0])
    mapping_layers = mk.get("num_layers", mapping.state.get("num_layers", None))
    if mapping_layers is None:
        mapping_layers = sum(1 for k in mapping.modules if re.fullmatch(r"fc\d+", k))
    conv_clamp = sk.get("conv_clamp", layer_attrs.get("conv_clamp", None))
    try:
        config = GeneratorConfig(
            z_dim=int(z_dim) if z_dim is not None else 0,
            w_dim=int(w_dim) if w_dim is not None else 0,
            c_dim=0,
            mapping_layers=int(mapping_layers),
            mapping_lr_multiplier=float(mk.get("lr_multiplier", lr_default)),
            img_resolution=int(img_resolution),
            img_channels=int(img_channels),
            channels=channels,
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
            demod_weight_gain=False,
            use_noise=bool(sk.get("use_noise", layer_attrs.get("use_noise", True))),
            architecture="skip",
        )
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unsupported network: {exc}") from None
    notes = []
    if sk.get("num_fp16_res"):
        notes.append(f"trained with num_fp16_res={sk['num_fp16_res']} (weights are float32; inference precision is ours to choose)")
    return config, notes
