"""Checkpoint readers and the StyleCast checkpoint format.

Three on-disk formats are read, each recognised by its CONTENT (the file name does not matter):

* NVlabs stylegan2-ada-pytorch / stylegan3 network pickles (``network-snapshot-*.pkl``): a
  pickle of ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``. Read with
  :mod:`engine.synthesis.safe_pickle`, which never executes code from the file. ``G_ema`` is
  used; its parameters already carry our names.
* rosinality stylegan2-pytorch ``.pt`` files (torch zip or legacy torch format), both the
  converted ones (``g_ema``, ``latent_avg``) and training checkpoints from its ``train.py``
  (``g``, ``d``, ``g_ema``, ``g_optim``, ``d_optim``, ``args``, ``ada_aug_p``). Read with
  ``torch.load(weights_only=True)``; ``argparse.Namespace`` is the only extra global allowed.
* StyleCast's own format: a safetensors file whose header metadata holds the
  :class:`GeneratorConfig` as JSON under ``"stylecast_config"``, plus a human-readable sidecar
  ``<name>.json`` (used when the metadata is missing). Any float dtype; loaded as float32.

Every failure is a :class:`CheckpointError` whose message starts with the file name and, where
one tensor is at fault, names it, e.g.
``ckpt.pkl: tensor 'synthesis.b8.conv0.weight' has shape (8, 4, 3, 3), expected (8, 8, 3, 3)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from . import safe_pickle
from ..weights_io import save_with_sidecar
from .networks import Generator, GeneratorConfig, demo_generator

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "detect_format",
    "read_checkpoint",
    "load_generator",
    "save_generator",
    "sidecar_path",
    "FORMAT_NVLABS",
    "FORMAT_ROSINALITY",
    "FORMAT_STYLECAST",
]

FORMAT_NVLABS = "nvlabs-pkl"
FORMAT_ROSINALITY = "rosinality-pt"
FORMAT_STYLECAST = "stylecast-safetensors"

METADATA_CONFIG_KEY = "stylecast_config"
METADATA_FORMAT_KEY = "stylecast_format"
STYLECAST_FORMAT_VERSION = "1"

# torch.save(..., _use_new_zipfile_serialization=False) starts with the pickled magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"
_FOREIGN_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip file",
    b"\x89HDF": "an HDF5 file",
    b"PK\x05\x06": "an empty zip archive",
    b"\x7fELF": "an executable",
    b"%PDF": "a PDF document",
}


class CheckpointError(ValueError):
    """A checkpoint could not be read. The message names the file and, if relevant, the tensor."""


@dataclass
class Checkpoint:
    """A checkpoint read into our naming: config + float32 state dict, ready for a Generator."""

    path: Path
    format: str
    config: GeneratorConfig
    state: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)

    def build(self, device: str | torch.device = "cpu") -> Generator:
        G = Generator(self.config)
        G.load_state_dict(self.state, strict=True)
        return G.to(device).eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Public API

#: the trained demo generator (float16 safetensors + JSON sidecar), ``load_generator("demo")``
DEMO_ASSET = Path(__file__).resolve().parents[1] / "assets" / "demo_generator.safetensors"


def load_generator(source: str | os.PathLike, *, device: str | torch.device = "cpu") -> Generator:
    """Load a :class:`Generator` from a checkpoint file or a preset name.

    ``source`` is a path (NVlabs ``.pkl``, rosinality ``.pt`` or StyleCast ``.safetensors``,
    told apart by content), or one of the preset names ``"demo"`` (the trained demo generator
    shipped in ``engine/assets``: 128 px faces of the demo world, see ``engine.train_demo``),
    ``"random"`` (an untrained StyleGAN2 of the same shape from a fixed seed, made in memory),
    ``"ffhq256"``, ``"ffhq512"``, ``"ffhq1024"`` (official NVlabs pickles, downloaded once into
    ``$STYLECAST_CACHE`` or ``~/.cache/stylecast``). An existing path wins over a preset name.
    The generator comes back in eval mode with gradients off, on ``device``.
    Raises :class:`CheckpointError`.
    """
    from . import presets  # late import: presets imports CheckpointError from here

    path = Path(source)
    name = str(source)
    if not path.exists():
        if name == "demo":
            if not DEMO_ASSET.is_file():
                raise CheckpointError(f"the demo generator's weights are missing from this install ({DEMO_ASSET})")
            return read_checkpoint(DEMO_ASSET).build(device)
        if name == "random":
            return demo_generator().to(device).eval().requires_grad_(False)
        if name in presets.PRESETS:
            path = presets.fetch_preset(name)
            try:
                return read_checkpoint(path).build(device)
            except CheckpointError as exc:
                raise CheckpointError(f"{exc} (cached download of preset '{name}'; delete the file to fetch it again)") from None
        raise CheckpointError(
            f"{name}: no such file (and not a preset name; presets: {', '.join(presets.PRESET_NAMES)})"
        )
    return read_checkpoint(path).build(device)


def save_generator(
    G: Generator,
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    source: str | None = None,
) -> Path:
    """Write ``G`` in the StyleCast format: ``path`` (safetensors) and the sidecar ``<stem>.json``.

    ``dtype`` is the on-disk float type (``torch.float16`` halves the size; loading always gives
    float32). ``source`` is an optional provenance note stored in both files. Writes are atomic
    (temporary file + rename). Returns the safetensors path.
    """
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a float type, got {dtype}")
    path = Path(path)
    side = sidecar_path(path)
    if side == path:
        raise ValueError(f"{path}: the checkpoint must not be a .json file (the sidecar is {side.name})")
    config_json = json.dumps(G.config.to_dict(), sort_keys=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in G.state_dict().items()}
    for k, v in tensors.items():
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{path}: tensor '{k}' is not finite as {str(dtype).removeprefix('torch.')} "
                             f"(max |x| = {float(G.state_dict()[k].abs().max()):g})")
    metadata = {
        METADATA_FORMAT_KEY: STYLECAST_FORMAT_VERSION,
        METADATA_CONFIG_KEY: config_json,
        "dtype": str(dtype).removeprefix("torch."),
    }
    if source is not None:
        metadata["source"] = str(source)
    sidecar = {
        "format": "stylecast-generator",
        "format_version": int(STYLECAST_FORMAT_VERSION),
        "weights": path.name,
        "dtype": metadata["dtype"],
        "source": source,
        "config": G.config.to_dict(),
        "num_parameters": int(sum(t.numel() for t in tensors.values())),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    return save_with_sidecar(tensors, path, side, metadata, sidecar)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``OUT.safetensors`` → ``OUT.json`` (the human-readable config next to the weights)."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix else path.with_name(path.name + ".json")


def detect_format(path: str | os.PathLike) -> str:
    """Name the checkpoint format of ``path`` from its first bytes (never from its name)."""
    path = Path(path)
    head, size = _read_head(path)
    if size == 0:
        raise CheckpointError(f"{path}: empty file")
    if head.startswith(_ZIP_MAGIC):
        return FORMAT_ROSINALITY
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return FORMAT_ROSINALITY
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return FORMAT_NVLABS
    if size >= 10:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return FORMAT_STYLECAST
    for magic, what in _FOREIGN_MAGIC.items():
        if head.startswith(magic):
            raise CheckpointError(f"{path}: not a generator checkpoint (this is {what})")
    raise CheckpointError(
        f"{path}: not a generator checkpoint (unrecognised content; expected an NVlabs .pkl, "
        "a rosinality .pt or a StyleCast .safetensors file)"
    )


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read any supported checkpoint into our naming and check it against the config it implies."""
    path = Path(path)
    fmt = detect_format(path)
    reader = {FORMAT_NVLABS: _read_nvlabs, FORMAT_ROSINALITY: _read_rosinality, FORMAT_STYLECAST: _read_stylecast}[fmt]
    return reader(path)


# ---------------------------------------------------------------------------------------------
# Shared: match the tensors of a file against what our Generator expects


@dataclass
class _Slot:
    """Where our tensor lives in the file, and the shape it has there (a function of ours)."""

    source: str
    source_shape: Callable[[tuple], tuple] = lambda shape: shape


def _fmt_shape(shape: Iterable[int]) -> str:
    shape = tuple(int(s) for s in shape)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _name_list(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def _make_generator(path: Path, config: GeneratorConfig) -> Generator:
    try:
        return Generator(config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: unsupported network: {exc}") from None


def _gather(
    path: Path,
    config: GeneratorConfig,
    raw: Mapping[str, Any],
    slots: Mapping[str, _Slot] | None = None,
    ignore: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Pick every tensor our Generator(config) needs out of ``raw`` (file naming), checking names,
    shapes, dtypes and values; anything left over that is not in ``ignore`` is an error."""
    slots = slots or {}
    expected = {k: tuple(v.shape) for k, v in _make_generator(path, config).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    used: set[str] = set()
    for key, shape in expected.items():
        slot = slots.get(key) or _Slot(key)
        used.add(slot.source)
        if slot.source not in raw:
            missing.append(slot.source)
            continue
        t = raw[slot.source]
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: entry '{slot.source}' is a {type(t).__name__}, not a tensor")
        want = tuple(slot.source_shape(shape))
        if tuple(t.shape) != want:
            raise CheckpointError(
                f"{path}: tensor '{slot.source}' has shape {_fmt_shape(t.shape)}, expected {_fmt_shape(want)}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: tensor '{slot.source}' has dtype {t.dtype}, expected a float type")
        t = t.detach().to(torch.float32).reshape(shape).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor '{slot.source}' contains NaN or infinite values")
        out[key] = t
    if missing:
        raise CheckpointError(f"{path}: missing tensor{'s' if len(missing) > 1 else ''} {_name_list(missing)}")
    extra = sorted(set(raw) - used - set(ignore))
    if extra:
        raise CheckpointError(f"{path}: unexpected tensor{'s' if len(extra) > 1 else ''} {_name_list(extra)}")
    return out


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _read_head(path: Path, n: int = 64) -> tuple[bytes, int]:
    try:
        if path.is_dir():
            raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
        with open(path, "rb") as f:
            return f.read(n), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read file ({exc.strerror or exc})") from None


# ---------------------------------------------------------------------------------------------
# NVlabs network pickles

_RESAMPLE_FILTER = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
_GENERATOR_INIT_ARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}


def _read_nvlabs(path: Path) -> Checkpoint:
    try:
        with open(path, "rb") as f:
            data = safe_pickle.safe_load(f)
    except safe_pickle.ForbiddenGlobal as exc:
        hint = ""
        if exc.global_name.startswith("dnnlib.tflib"):
            hint = "; this is a TensorFlow StyleGAN pickle: convert it with NVlabs legacy.py first"
        raise CheckpointError(f"{path}: {exc}{hint}") from None
    except safe_pickle.UnknownPersistentClass as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (EOFError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt pickle ({_first_line(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: corrupt pickle (implausible sizes)") from None
    except Exception as exc:  # a damaged stream can make pickle raise almost anything
        raise CheckpointError(f"{path}: corrupt pickle ({type(exc).__name__}: {_first_line(exc)})") from None

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

    tensors = _flatten_persistent(path, G)
    config, notes = _nvlabs_config(path, G, tensors)
    filters = [k for k in tensors if k.endswith("resample_filter")]
    for key in filters:
        f = tensors[key]
        ok = isinstance(f, torch.Tensor) and tuple(f.shape) == (4, 4) and f.is_floating_point()
        if not ok or not torch.allclose(f.float() / f.float().sum(), _RESAMPLE_FILTER, atol=1e-6):
            raise CheckpointError(
                f"{path}: tensor '{key}' is not the [1, 3, 3, 1] resampling filter; other filters are not supported"
            )
    state = _gather(path, config, tensors, ignore=filters)
    return Checkpoint(path=path, format=FORMAT_NVLABS, config=config, state=state, notes=notes)


def _flatten_persistent(path: Path, root: safe_pickle.PersistentObject) -> dict[str, Any]:
    """``Module.state_dict()`` of a recorded persistent-object tree: parameters and buffers by
    dotted name (non-persistent buffers excluded, as torch does)."""
    out: dict[str, Any] = {}

    def walk(obj: safe_pickle.PersistentObject, prefix: str, depth: int) -> None:
        if depth > 32:
            raise CheckpointError(f"{path}: network nesting too deep")
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


# ---------------------------------------------------------------------------------------------
# rosinality stylegan2-pytorch


def _torch_load(path: Path) -> Any:
    head, _ = _read_head(path, 4)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt zip archive ({_first_line(exc)})") from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointError(f"{path}: zip archive is not a torch checkpoint (no data.pkl inside)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = safe_pickle.forbidden_global_from_torch_error(exc)
        if named is not None:
            raise CheckpointError(f"{path}: {named}") from None
        raise CheckpointError(f"{path}: corrupt torch file ({_first_line(exc)})") from None
    except Exception as exc:  # RuntimeError from the zip reader, EOFError, ...
        raise CheckpointError(f"{path}: truncated or corrupt torch file ({_first_line(exc)})") from None


def _read_rosinality(path: Path) -> Checkpoint:
    ckpt = _torch_load(path)
    if isinstance(ckpt, dict) and "input.input" in ckpt and "g_ema" not in ckpt:
        ckpt = {"g_ema": ckpt}  # a bare g_ema.state_dict()
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        keys = ", ".join(repr(k) for k in list(ckpt)[:8]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: torch file has no 'g_ema' generator (found: {keys or 'nothing'})")
    g = ckpt["g_ema"]
    if not isinstance(g, dict):
        raise CheckpointError(f"{path}: 'g_ema' is a {type(g).__name__}, not a state dict")
    args = ckpt.get("args")
    arch = getattr(args, "arch", "stylegan2")
    if arch != "stylegan2":
        raise CheckpointError(f"{path}: rosinality architecture '{arch}' is not supported (only 'stylegan2')")

    config = _rosinality_config(path, g, args)
    slots = _rosinality_slots(config)
    raw = {k: v for k, v in g.items()}
    notes: list[str] = []
    latent_avg = ckpt.get("latent_avg")
    compute_w_avg = latent_avg is None
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor):
            raise CheckpointError(f"{path}: 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
        if latent_avg.ndim == 2 and latent_avg.shape[0] == 1:
            latent_avg = latent_avg[0]
        raw["latent_avg"] = latent_avg
    else:
        raw["latent_avg"] = torch.zeros(config.w_dim)
    ignore = {k for k in g if k.endswith(".blur.kernel") or k.endswith(".upsample.kernel")}
    for key in sorted(ignore):
        _check_rosinality_kernel(path, key, g[key])
    state = _gather(path, config, raw, slots, ignore=ignore)
    if compute_w_avg:
        msg = "no 'latent_avg' in the checkpoint; w_avg set to the mean of 10,000 mapped z (seed 0)"
        warnings.warn(f"{path}: {msg}", stacklevel=3)
        notes.append(msg)
        G = _make_generator(path, config)
        G.load_state_dict(state, strict=True)
        z = torch.from_numpy(np.random.RandomState(0).randn(10_000, config.z_dim).astype(np.float32))
        with torch.no_grad():
            state["mapping.w_avg"] = G.mapping.forward_w(z).mean(dim=0)
    return Checkpoint(path=path, format=FORMAT_ROSINALITY, config=config, state=state, notes=notes)


def _check_rosinality_kernel(path: Path, key: str, t: Any) -> None:
    ok = isinstance(t, torch.Tensor) and tuple(t.shape) == (4, 4) and t.is_floating_point()
    if not ok or not torch.allclose(t.float() / t.float().sum(), _RESAMPLE_FILTER, atol=1e-6):
        raise CheckpointError(f"{path}: tensor '{key}' is not the [1, 3, 3, 1] blur kernel; other kernels are not supported")


def _rosinality_config(path: Path, g: dict, args: Any) -> GeneratorConfig:
    def shape_of(key: str) -> tuple:
        t = g.get(key)
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: missing tensor '{key}'")
        return tuple(t.shape)

    mlp = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    if not mlp:
        raise CheckpointError(f"{path}: missing tensor 'style.1.weight'")
    n_mlp = len(mlp)
    w_shape = shape_of("style.1.weight")
    if len(w_shape) != 2:
        raise CheckpointError(f"{path}: tensor 'style.1.weight' has shape {_fmt_shape(w_shape)}, expected 2 dimensions")
    style_dim = int(w_shape[1])
    n_rgb = len({m.group(1) for k in g if (m := re.fullmatch(r"to_rgbs\.(\d+)\..*", k))})
    size = 2 ** (n_rgb + 2)
    channel_multiplier = getattr(args, "channel_multiplier", 2)
    if size >= 64:
        c64 = shape_of("convs.6.conv.weight")  # first (up-sampling) conv of the 64 px block
        if len(c64) != 5 or c64[1] % 256:
            raise CheckpointError(
                f"{path}: tensor 'convs.6.conv.weight' has shape {_fmt_shape(c64)}, which fits no channel_multiplier"
            )
        channel_multiplier = c64[1] // 256
    if args is not None:
        for name, ours in (("size", size), ("latent", style_dim), ("n_mlp", n_mlp)):
            theirs = getattr(args, name, ours)
            if theirs != ours:
                raise CheckpointError(f"{path}: args.{name}={theirs} but the g_ema tensors imply {ours}")
    try:
        return GeneratorConfig.rosinality(
            size=size, style_dim=style_dim, n_mlp=n_mlp,
            channel_multiplier=int(channel_multiplier), lr_mlp=float(getattr(args, "lr_mlp", 0.01)),
        )
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unsupported network: {exc}") from None


def _lead1(shape: tuple) -> tuple:
    return (1, *shape)


def _rosinality_slots(config: GeneratorConfig) -> dict[str, _Slot]:
    """Our tensor name → rosinality g_ema name and shape (see API_SPEC: rosinality naming)."""
    slots: dict[str, _Slot] = {}
    for i in range(config.mapping_layers):
        slots[f"mapping.fc{i}.weight"] = _Slot(f"style.{i + 1}.weight")
        slots[f"mapping.fc{i}.bias"] = _Slot(f"style.{i + 1}.bias")
    slots["mapping.w_avg"] = _Slot("latent_avg")
    slots["synthesis.b4.const"] = _Slot("input.input", _lead1)

    def styled(ours: str, theirs: str, noise: str | None) -> None:
        slots[f"{ours}.weight"] = _Slot(f"{theirs}.conv.weight", _lead1)
        slots[f"{ours}.affine.weight"] = _Slot(f"{theirs}.conv.modulation.weight")
        slots[f"{ours}.affine.bias"] = _Slot(f"{theirs}.conv.modulation.bias")
        slots[f"{ours}.bias"] = _Slot(f"{theirs}.activate.bias")
        slots[f"{ours}.noise_strength"] = _Slot(f"{theirs}.noise.weight", lambda s: (1,))
        if noise is not None:
            slots[f"{ours}.noise_const"] = _Slot(noise, lambda s: (1, 1, *s))

    def to_rgb(ours: str, theirs: str) -> None:
        slots[f"{ours}.weight"] = _Slot(f"{theirs}.conv.weight", _lead1)
        slots[f"{ours}.affine.weight"] = _Slot(f"{theirs}.conv.modulation.weight")
        slots[f"{ours}.affine.bias"] = _Slot(f"{theirs}.conv.modulation.bias")
        slots[f"{ours}.bias"] = _Slot(f"{theirs}.bias", lambda s: (1, *s, 1, 1))

    styled("synthesis.b4.conv1", "conv1", "noises.noise_0")
    to_rgb("synthesis.b4.torgb", "to_rgb1")
    for k, res in enumerate(config.resolutions[1:]):
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * k}", f"noises.noise_{2 * k + 1}")
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", f"noises.noise_{2 * k + 2}")
        to_rgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
    return slots


# ---------------------------------------------------------------------------------------------
# StyleCast safetensors


def _read_stylecast(path: Path) -> Checkpoint:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError on truncated data, ...
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({_first_line(exc)})") from None

    config_json = metadata.get(METADATA_CONFIG_KEY)
    origin = "header metadata"
    if config_json is None:
        side = sidecar_path(path)
        origin = side.name
        try:
            config_json = json.dumps(json.loads(side.read_text())["config"])
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: safetensors file without a StyleCast config (no '{METADATA_CONFIG_KEY}' metadata "
                f"and no sidecar {side.name})"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable sidecar {side.name} ({_first_line(exc)})") from None
    try:
        config = GeneratorConfig.from_dict(json.loads(config_json))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid StyleCast config in {origin} ({_first_line(exc)})") from None
    state = _gather(path, config, raw)
    return Checkpoint(path=path, format=FORMAT_STYLECAST, config=config, state=state)

