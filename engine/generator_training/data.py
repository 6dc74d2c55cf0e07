"""Training images: shards or PNGs held in memory (``--objective gan``), faces rendered on the
fly from the demo world's code (``recon``), and the mask of the pixels a motion moves."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from engine.demo_world.faces import RENDERER_VERSION
from engine.demo_world.latent import LATENT_VERSION, render_z
from engine.generator_training.config import MOTION_MASK_THRESHOLD

__all__ = ["DataError", "ImageData", "load_images", "RenderedFaces", "motion_mask"]

class DataError(ValueError):
    """A problem with the training images (one-line message naming the folder or file)."""


# -- data ----------------------------------------------------------------------------------------
class ImageData:
    """Training images held in memory as uint8 [n, R, R, 3] arrays (one per shard)."""

    def __init__(self, parts: Sequence[np.ndarray], names: Sequence[str], root: Path, kind: str):
        self.parts = list(parts)
        self.names = list(names)
        self.root, self.kind = root, kind
        self.ends = np.cumsum([p.shape[0] for p in self.parts])
        self.resolution = int(self.parts[0].shape[1])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [B, R, R, 3] of the images with these global indices."""
        part = np.searchsorted(self.ends, indices, side="right")
        starts = self.ends - np.array([p.shape[0] for p in self.parts])
        return np.stack([self.parts[k][i - starts[k]] for k, i in zip(part, indices)])

    def fingerprint(self) -> dict:
        """What a resumed run must find again: kind, count, resolution, a digest of names and sizes."""
        h = hashlib.sha1()
        for name, p in zip(self.names, self.parts):
            h.update(f"{name}:{p.shape[0]}\n".encode())
        return {"kind": self.kind, "count": len(self), "resolution": self.resolution, "digest": h.hexdigest()}


def _check_images(arr: np.ndarray, where: str) -> None:
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{where}: images must be [N, H, W, 3], got {list(arr.shape)}")
    n, h, w, _ = arr.shape
    if h != w or h < 4 or h & (h - 1):
        raise DataError(f"{where}: images are {w}x{h}; they must be square with a power-of-two side >= 4")


def load_images(root: os.PathLike | str, *, progress: bool = False) -> ImageData:
    """Read ``shard-*.npz`` (else ``*.npz``) files with an ``images`` array, else ``*.png`` files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {os.fspath(root)!r} does not exist or is not a folder")
    shards = sorted(p for p in root.glob("shard-*.npz") if p.is_file()) or \
        sorted(p for p in root.glob("*.npz") if p.is_file())
    parts: list[np.ndarray] = []
    names: list[str] = []
    if shards:
        for p in shards:
            try:
                with np.load(p, allow_pickle=False) as z:
                    if "images" not in z.files:
                        raise DataError(f"{p.name}: no 'images' array (found: {', '.join(z.files) or 'nothing'})")
                    arr = z["images"]
            except DataError:
                raise
            except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
                raise DataError(f"{p.name}: unreadable .npz shard ({type(exc).__name__})") from None
            _check_images(arr, p.name)
            if parts and arr.shape[1:] != parts[0].shape[1:]:
                raise DataError(f"{p.name}: images are {arr.shape[2]}x{arr.shape[1]}, "
                                f"{names[0]}'s are {parts[0].shape[2]}x{parts[0].shape[1]}")
            if arr.shape[0]:
                parts.append(arr)
                names.append(p.name)
        if not parts:
            raise DataError(f"the .npz shards in {os.fspath(root)!r} hold no images")
        return ImageData(parts, names, root, "npz")
    pngs = sorted(p for p in root.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not pngs:
        raise DataError(f"no .npz shards or .png images in {os.fspath(root)!r}")
    it = pngs
    if progress:
        it = tqdm(pngs, desc="load images", unit="img", dynamic_ncols=True, leave=False)
    imgs = []
    for p in it:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:  # PIL.UnidentifiedImageError, OSError ...
            raise DataError(f"{p.name}: unreadable image ({type(exc).__name__})") from None
        if imgs and arr.shape != imgs[0].shape:
            raise DataError(f"{p.name}: image is {arr.shape[1]}x{arr.shape[0]}, "
                            f"{pngs[0].name} is {imgs[0].shape[1]}x{imgs[0].shape[0]}")
        imgs.append(arr)
    stack = np.stack(imgs)
    _check_images(stack, os.fspath(root))
    return ImageData([stack], [p.name for p in pngs], root, "png")


class RenderedFaces:
    """Training images made on the fly for ``--objective recon``: for z ~ N(0, I) of the demo world's
    code (:mod:`engine.demo_world.latent`), the render of ``params_from_z(z)``."""

    kind = "rendered"

    def __init__(self, resolution: int = 128, supersample: int = 4):
        if resolution < 8 or resolution & (resolution - 1):
            raise DataError(f"rendered faces need a power-of-two size >= 8, got {resolution}")
        self.resolution, self.supersample = int(resolution), int(supersample)

    def __len__(self) -> int:
        return 0          # unbounded: every step renders new faces

    def render(self, z: np.ndarray) -> np.ndarray:
        return render_z(np.asarray(z, np.float64), self.resolution, supersample=self.supersample)

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "count": 0, "resolution": self.resolution,
                "digest": f"latent {LATENT_VERSION}, renderer {RENDERER_VERSION}, supersample {self.supersample}"}


def motion_mask(target: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] 0/1 mask of the pixels where images ``target`` differ from ``rest`` (both
    [B, C, H, W] in −1..1) by more than MOTION_MASK_THRESHOLD in any channel, dilated by one pixel."""
    mask = ((target - rest).abs().amax(dim=1, keepdim=True) > MOTION_MASK_THRESHOLD).to(target.dtype)
    return F.max_pool2d(mask, 3, stride=1, padding=1)


