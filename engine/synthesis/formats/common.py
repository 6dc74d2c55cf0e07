"""What the checkpoint readers share: format names, the error, the record a reader returns, and
the matching of a file's tensors against what our Generator expects."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from engine.synthesis.networks import Generator, GeneratorConfig
from engine.weights_io import sidecar_path

__all__ = ["CheckpointError", "Checkpoint", "FORMAT_NVLABS", "FORMAT_ROSINALITY", "FORMAT_STYLECAST", "sidecar_path",
           "Slot", "gather", "RESAMPLE_FILTER", "make_generator", "first_line", "read_head", "fmt_shape", "name_list"]

FORMAT_NVLABS = "nvlabs-pkl"
FORMAT_ROSINALITY = "rosinality-pt"
FORMAT_STYLECAST = "stylecast-safetensors"

METADATA_CONFIG_KEY = "stylecast_config"
METADATA_FORMAT_KEY = "stylecast_format"
STYLECAST_FORMAT_VERSION = "1"

# torch.save(..., _use_new_zipfile_serialization=False) starts with the pickled magic number.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
ZIP_MAGIC = b"PK\x03\x04"
FOREIGN_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip file",
    b"\x89HDF": "an HDF5 file",
    b"PK\x05\x06": "an empty zip archive",
    b"\x7fELF": "an executable",
    b"%PDF": "a PDF document",
}

#: the [1, 3, 3, 1] ⊗ [1, 3, 3, 1] / 64 blur kernel of StyleGAN2's up/down-sampling (the only one supported)
RESAMPLE_FILTER = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64


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


@dataclass
class Slot:
    """Where our tensor lives in the file, and the shape it has there (a function of ours)."""

    source: str
    source_shape: Callable[[tuple], tuple] = lambda shape: shape


def fmt_shape(shape: Iterable[int]) -> str:
    shape = tuple(int(s) for s in shape)
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def name_list(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def make_generator(path: Path, config: GeneratorConfig) -> Generator:
    try:
        return Generator(config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: unsupported network: {exc}") from None


def gather(
    path: Path,
    config: GeneratorConfig,
    raw: Mapping[str, Any],
    slots: Mapping[str, Slot] | None = None,
    ignore: Iterable[str] = (),
) -> dict[str, torch.Tensor]:
    """Pick every tensor our Generator(config) needs out of ``raw`` (file naming), checking names,
    shapes, dtypes and values; anything left over that is not in ``ignore`` is an error."""
    slots = slots or {}
    expected = {k: tuple(v.shape) for k, v in make_generator(path, config).state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    used: set[str] = set()
    for key, shape in expected.items():
        slot = slots.get(key) or Slot(key)
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
                f"{path}: tensor '{slot.source}' has shape {fmt_shape(t.shape)}, expected {fmt_shape(want)}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{path}: tensor '{slot.source}' has dtype {t.dtype}, expected a float type")
        t = t.detach().to(torch.float32).reshape(shape).contiguous()
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{path}: tensor '{slot.source}' contains NaN or infinite values")
        out[key] = t
    if missing:
        raise CheckpointError(f"{path}: missing tensor{'s' if len(missing) > 1 else ''} {name_list(missing)}")
    extra = sorted(set(raw) - used - set(ignore))
    if extra:
        raise CheckpointError(f"{path}: unexpected tensor{'s' if len(extra) > 1 else ''} {name_list(extra)}")
    return out


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def regular_file(path: Path) -> os.stat_result:
    """``os.stat`` of ``path`` if it is a regular file; a FIFO, device, socket or directory is
    refused before anything opens it (opening a FIFO blocks until a writer comes)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise CheckpointError(f"{path}: is {kind}, not a checkpoint file")
    return st


def read_head(path: Path, n: int = 64) -> tuple[bytes, int]:
    regular_file(path)
    try:
        with open(path, "rb") as f:
            return f.read(n), os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read file ({exc.strerror or exc})") from None
