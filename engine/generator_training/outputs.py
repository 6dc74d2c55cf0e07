"""What a demo-generator run writes: the trainer state (atomically), PNG grids, the float16 export of
G_ema with ``w_avg`` at the face at rest, and the learned motion directions tied to that export."""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from engine.demo_world.latent import MOTION_SCALE, MOTION_Z
from engine.demo_world.name_directions import ROLE_OF
from engine.latent.direction_set import Direction, DirectionSet
from engine.generator_training.config import DIRECTIONS_FILE
from engine.latent.identity import rest_z
from engine.synthesis.checkpoints import DEMO_ASSET, CheckpointError, load_generator, save_generator
from engine.synthesis.fingerprint import generator_hash

__all__ = ["image_grid", "save_png", "export_generator", "learned_directions", "init_from_export"]


def image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [n, H, W, 3] → one [rows·H, cols·W, 3] image (missing cells black)."""
    n, h, w, c = images.shape
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return grid


def save_png(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_generator(G_ema, path: Path, *, seed: int, source: str) -> Path:
    """``G_ema`` (a CPU copy) as float16 safetensors + JSON config at ``path``. For a generator whose
    z has rest coordinates, ``w_avg`` (what truncation pulls toward) is first set to the mean face
    at rest (random z with the rest coordinates fixed), not the mean over random mouths and poses."""
    G = copy.deepcopy(G_ema).to("cpu")
    if G.config.z_rest:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = G.mapping.forward_w(rest_z(G, torch.randn(4096, G.z_dim, generator=gen)))
            G.mapping.w_avg.copy_(w.mean(dim=0))
    return save_generator(G, path, dtype=torch.float16, source=source)


def learned_directions(motion_dirs: torch.Tensor, generator_path: Path, *, frozen: Sequence[str] = ()) -> DirectionSet:
    """One direction per motion role (:data:`engine.demo_world.name_directions.ROLE_OF`) from the
    learned rows ``motion_dirs`` [len(MOTION_Z), w_dim], x in standard deviations of the motion
    field over random faces (``MOTION_SCALE``), so x = (value − rest) / scale; frozen fields are
    left out. Tied to the hash of the generator saved at ``generator_path``."""
    h = generator_hash(load_generator(generator_path))
    ds = DirectionSet()
    A = motion_dirs.detach().cpu().double().numpy()
    for k, name in enumerate(MOTION_Z):
        if name not in ROLE_OF or name in frozen:
            continue
        norm = float(np.linalg.norm(A[k]))
        ds.add(Direction(ROLE_OF[name], A[k], stdev=max(norm, 1e-12), origin="learned",
                         source=f"engine.train_demo: learned with the generator; x = ({name} - rest) / "
                                f"{MOTION_SCALE[name]:.4f}"), checkpoint_hash=h)
    return ds


def init_from_export(G, motion_dirs: torch.Tensor, source: str) -> list[str]:
    """Start a recon run from an exported generator (``source``: a path or ``"demo"``, the shipped
    one): its weights into ``G`` (same shape required) and the rows of ``motion_dirs`` whose
    direction its ``demo_directions.json`` holds (the others keep their random start). Returns the
    motion fields taken from the file."""
    path = DEMO_ASSET if source == "demo" and not Path(source).exists() else Path(source)
    src = load_generator(path)
    if src.config.to_dict() != G.config.to_dict():
        raise ValueError(f"init: {os.fspath(source)!r} is not a generator of this run's shape "
                         "(the recon objective's demo shape)")
    G.load_state_dict({k: v.to(torch.float32) for k, v in src.state_dict().items()})
    dirs_path = path.with_name(DIRECTIONS_FILE)
    taken: list[str] = []
    if dirs_path.is_file():
        ds = DirectionSet.load(dirs_path, w_dim=G.w_dim)
        if ds.checkpoint_hash not in (None, generator_hash(src)):
            raise CheckpointError(f"init: {dirs_path} belongs to another generator than {os.fspath(path)!r}")
        with torch.no_grad():
            for k, name in enumerate(MOTION_Z):
                role = ROLE_OF.get(name)
                if role in ds:
                    d = ds[role]
                    motion_dirs[k].copy_(torch.from_numpy(d.vector * d.stdev).to(motion_dirs))
                    taken.append(name)
    return taken
