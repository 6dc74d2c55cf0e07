"""Loading a generator from any checkpoint format or preset name: :func:`load_generator`.

Three on-disk formats are read, each recognised by its CONTENT (the file name does not matter),
each by its own reader in :mod:`engine.synthesis.formats`:

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

import os
from pathlib import Path

import torch

from engine.synthesis import presets
from engine.synthesis.formats.common import (
    FOREIGN_MAGIC,
    FORMAT_NVLABS,
    FORMAT_ROSINALITY,
    FORMAT_STYLECAST,
    TORCH_LEGACY_MAGIC,
    ZIP_MAGIC,
    Checkpoint,
    CheckpointError,
    read_head,
    sidecar_path,
)
from engine.synthesis.formats.nvlabs import read_nvlabs
from engine.synthesis.formats.rosinality import read_rosinality
from engine.synthesis.formats.stylecast import read_stylecast, save_generator
from engine.synthesis.integrity import check_file_sha256
from engine.synthesis.networks import Generator, demo_generator

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "detect_format",
    "read_checkpoint",
    "load_generator",
    "save_generator",
    "sidecar_path",
    "DEMO_ASSET",
    "FORMAT_NVLABS",
    "FORMAT_ROSINALITY",
    "FORMAT_STYLECAST",
]


#: the trained demo generator (float16 safetensors + JSON sidecar), ``load_generator("demo")``
DEMO_ASSET = Path(__file__).resolve().parents[1] / "assets" / "demo_generator.safetensors"


def load_generator(source: str | os.PathLike, *, device: str | torch.device = "cpu",
                   expect_sha256: str | None = None) -> Generator:
    """Load a :class:`Generator` from a checkpoint file or a preset name.

    ``source`` is a path (NVlabs ``.pkl``, rosinality ``.pt`` or StyleCast ``.safetensors``,
    told apart by content), or one of the preset names ``"demo"`` (the trained demo generator
    shipped in ``engine/assets``: 128 px faces of the demo world, see ``engine.train_demo``),
    ``"random"`` (an untrained StyleGAN2 of the same shape from a fixed seed, made in memory),
    ``"ffhq256"``, ``"ffhq512"``, ``"ffhq1024"`` (official NVlabs pickles, downloaded once into
    ``$STYLECAST_CACHE`` or ``~/.cache/stylecast``). An existing path wins over a preset name.
    The generator comes back in eval mode with gradients off, on ``device``.
    ``expect_sha256``: refuse the file unless its sha256 is this (a path or a cached preset).
    Raises :class:`CheckpointError`.
    """
    path = Path(source)
    name = str(source)
    if not path.exists():
        if name == "demo":
            if not DEMO_ASSET.is_file():
                raise CheckpointError(f"the demo generator's weights are missing from this install ({DEMO_ASSET})")
            check_file_sha256(DEMO_ASSET, expect_sha256)
            return read_checkpoint(DEMO_ASSET).build(device)
        if name == "random":
            if expect_sha256 is not None:
                raise CheckpointError("random: made in memory, there is no file whose sha256 could be checked")
            return demo_generator().to(device).eval().requires_grad_(False)
        if name in presets.PRESETS:
            path = presets.fetch_preset(name)
            check_file_sha256(path, expect_sha256)
            try:
                return read_checkpoint(path).build(device)
            except CheckpointError as exc:
                raise CheckpointError(f"{exc} (cached download of preset '{name}'; delete the file to fetch it again)") from None
        raise CheckpointError(
            f"{name}: no such file (and not a preset name; presets: {', '.join(presets.PRESET_NAMES)})"
        )
    check_file_sha256(path, expect_sha256)
    return read_checkpoint(path).build(device)


def detect_format(path: str | os.PathLike) -> str:
    """Name the checkpoint format of ``path`` from its first bytes (never from its name)."""
    path = Path(path)
    head, size = read_head(path)
    if size == 0:
        raise CheckpointError(f"{path}: empty file")
    if head.startswith(ZIP_MAGIC):
        return FORMAT_ROSINALITY
    if head.startswith(TORCH_LEGACY_MAGIC):
        return FORMAT_ROSINALITY
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return FORMAT_NVLABS
    if size >= 10:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return FORMAT_STYLECAST
    for magic, what in FOREIGN_MAGIC.items():
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
    reader = {FORMAT_NVLABS: read_nvlabs, FORMAT_ROSINALITY: read_rosinality, FORMAT_STYLECAST: read_stylecast}[fmt]
    return reader(path)
