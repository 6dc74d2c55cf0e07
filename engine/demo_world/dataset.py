"""The demo-world data set: rendered faces with their parameters, in ``.npz`` shards.

    python -m engine.demo_world.dataset --out data/faces --n 20000 [--seed 0] [--size 128]

Layout of ``DIR``::

    DIR/meta.json            fields, counts, seed, size, format and renderer versions
    DIR/shard-00000.npz      images uint8 [N, size, size, 3], identity float32 [N, len(IDENTITY_FIELDS)],
    DIR/shard-00001.npz      motion float32 [N, len(MOTION_FIELDS)], index int64 [N]
    ...

Sample ``i`` depends only on ``(seed, i)`` (and ``--per-identity``): its identity is drawn from
``np.random.default_rng([seed, i // per_identity, 0])`` and its motion from
``np.random.default_rng([seed, i, 1])``, so any shard can be rebuilt alone. Shards are written to a
temporary name and renamed, so a stopped run leaves only complete shards; running the same command
again keeps them and renders the rest (``--n`` may grow; other settings must match).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from ..cli_util import ArgumentParser, UsageError, fail
from .faces import RENDERER_VERSION, render_face
from .params import (
    IDENTITY_FIELDS,
    MOTION_FIELDS,
    Identity,
    Motion,
    sample_identity,
    sample_motion,
)

__all__ = ["FORMAT_VERSION", "RENDERER_VERSION", "DatasetError", "sample_pair", "render_range",
           "write_dataset", "read_meta", "shard_paths", "load_shards", "iter_images", "build_parser", "main"]

FORMAT_VERSION = 1
META = "meta.json"
_SETTINGS = ("format_version", "renderer_version", "seed", "size", "shard_size", "per_identity")


class DatasetError(UsageError):
    """A data-set folder that cannot be read or extended (one line, names the folder)."""


def sample_pair(seed: int, index: int, per_identity: int = 1) -> tuple[Identity, Motion]:
    """The parameters of sample ``index`` of the data set with ``seed``."""
    ident = sample_identity(np.random.default_rng([seed, index // per_identity, 0]))
    motion = sample_motion(np.random.default_rng([seed, index, 1]))
    return ident, motion


def render_range(seed: int, start: int, stop: int, size: int = 128, per_identity: int = 1,
                 supersample: int = 4) -> dict[str, np.ndarray]:
    """Render samples ``start .. stop-1``: dict of images / identity / motion / index arrays."""
    n = stop - start
    images = np.empty((n, size, size, 3), np.uint8)
    ident = np.empty((n, len(IDENTITY_FIELDS)), np.float32)
    motion = np.empty((n, len(MOTION_FIELDS)), np.float32)
    for k, i in enumerate(range(start, stop)):
        idn, mot = sample_pair(seed, i, per_identity)
        images[k] = render_face(idn, mot, size, supersample=supersample)
        ident[k] = idn.to_vector()
        motion[k] = mot.to_vector()
    return {"images": images, "identity": ident, "motion": motion, "index": np.arange(start, stop, dtype=np.int64)}


# -- reading -----------------------------------------------------------------------------------
def read_meta(root: str | os.PathLike) -> dict:
    root = Path(root)
    path = root / META
    if not root.is_dir():
        raise DatasetError(f"{root}: no such data-set folder")
    if not path.is_file():
        raise DatasetError(f"{root}: not a demo data set (no {META}); make one with python -m engine.demo_world.dataset")
    try:
        meta = json.loads(path.read_text())
        for key in (*_SETTINGS, "shards", "identity_fields", "motion_fields"):
            meta[key]
    except (ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    return meta


def _npy_header(z: zipfile.ZipFile, name: str):
    with z.open(name + ".npy") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(f)[0::2]
        return np.lib.format.read_array_header_2_0(f)[0::2]


def _shard_ok(path: Path, count: int, size: int) -> bool:
    """True when ``path`` is a complete shard of ``count`` samples at ``size`` px (headers only)."""
    try:
        with zipfile.ZipFile(path) as z:
            shape_i, dtype_i = _npy_header(z, "images")
            shape_p, _ = _npy_header(z, "identity")
            shape_m, _ = _npy_header(z, "motion")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return False
    return (tuple(shape_i) == (count, size, size, 3) and dtype_i == np.uint8
            and tuple(shape_p) == (count, len(IDENTITY_FIELDS)) and tuple(shape_m) == (count, len(MOTION_FIELDS)))


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """The shards listed in ``meta.json``, in order; errors when one is missing."""
    root = Path(root)
    meta = read_meta(root)
    if not meta["shards"]:
        raise DatasetError(f"{root}: the data set has no complete shards yet")
    paths = []
    for entry in meta["shards"]:
        p = root / entry["file"]
        if not p.is_file():
            raise DatasetError(f"{p}: shard listed in {META} is missing")
        paths.append(p)
    return paths


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in ("images", "identity", "motion")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DatasetError(f"{path}: unreadable shard ({type(e).__name__}: {e})") from None


def load_shards(root: str | os.PathLike, limit: int | None = None) -> dict[str, np.ndarray]:
    """All (or the first ``limit``) samples: ``images`` uint8 [N,H,W,3], ``identity`` float32
    [N, len(IDENTITY_FIELDS)], ``motion`` float32 [N, len(MOTION_FIELDS)]."""
    parts: dict[str, list[np.ndarray]] = {"images": [], "identity": [], "motion": []}
    have = 0
    for p in shard_paths(root):
        if limit is not None and have >= limit:
            break
        d = _load_npz(p)
        take = len(d["images"]) if limit is None else min(len(d["images"]), limit - have)
        for k in parts:
            parts[k].append(d[k][:take])
        have += take
    return {k: np.concatenate(v) for k, v in parts.items()}


def iter_images(root: str | os.PathLike, batch_size: int | None = None) -> Iterator[np.ndarray]:
    """Images uint8 [B, H, W, 3] in data-set order: one array per shard, or batches of
    ``batch_size`` (the last one may be smaller). Reads one shard at a time."""
    carry: np.ndarray | None = None
    for p in shard_paths(root):
        images = _load_npz(p)["images"]
        if batch_size is None:
            yield images
            continue
        if carry is not None and len(carry):
            images = np.concatenate([carry, images])
        full = len(images) // batch_size * batch_size
        for i in range(0, full, batch_size):
            yield images[i:i + batch_size]
        carry = images[full:]
    if batch_size is not None and carry is not None and len(carry):
        yield carry


# -- writing -----------------------------------------------------------------------------------
def _write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_meta(root: Path, meta: dict) -> None:
    tmp = root / f".{META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, root / META)


def _render_task(args):
    return render_range(*args)


def write_dataset(out: str | os.PathLike, n: int, *, seed: int = 0, size: int = 128, shard_size: int = 1000,
                  per_identity: int = 1, workers: int = 1, progress: bool = True) -> dict:
    """Render ``n`` samples into ``out`` (resumable, see the module doc). Returns the meta dict."""
    if n < 1:
        raise UsageError(f"--n must be >= 1, got {n}")
    if size < 16 or size > 1024:
        raise UsageError(f"--size must be in 16 .. 1024, got {size}")
    if shard_size < 1 or per_identity < 1 or workers < 1:
        raise UsageError("--shard-size, --per-identity and --workers must be >= 1")
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")
    settings = {"format_version": FORMAT_VERSION, "renderer_version": RENDERER_VERSION, "seed": int(seed),
                "size": int(size), "shard_size": int(shard_size), "per_identity": int(per_identity)}
    if (root / META).exists():
        old = read_meta(root)
        diff = [f"{k} {old[k]} != {settings[k]}" for k in _SETTINGS if old[k] != settings[k]]
        if diff:
            raise DatasetError(f"{root}: holds a data set made with other settings ({', '.join(diff)}); "
                               "use another --out or the same settings")
    elif root.is_dir() and any(root.glob("shard-*.npz")):
        raise DatasetError(f"{root}: has shards but no {META}; use an empty folder")
    root.mkdir(parents=True, exist_ok=True)

    num_shards = (n + shard_size - 1) // shard_size
    counts = [min(shard_size, n - k * shard_size) for k in range(num_shards)]
    names = [f"shard-{k:05d}.npz" for k in range(num_shards)]
    done = [_shard_ok(root / names[k], counts[k], size) for k in range(num_shards)]
    meta = {**settings, "n": int(n), "identity_fields": list(IDENTITY_FIELDS), "motion_fields": list(MOTION_FIELDS),
            "shards": [], "complete": False}

    def record():
        meta["shards"] = [{"file": names[k], "count": counts[k]} for k in range(num_shards) if done[k]]
        meta["count"] = sum(e["count"] for e in meta["shards"])
        meta["complete"] = all(done)
        _write_meta(root, meta)

    record()
    todo = [k for k in range(num_shards) if not done[k]]
    chunk = 100
    tasks = []
    for k in todo:
        lo, hi = k * shard_size, k * shard_size + counts[k]
        tasks += [(seed, a, min(a + chunk, hi), size, per_identity) for a in range(lo, hi, chunk)]
    bar = tqdm(total=n, initial=n - sum(counts[k] for k in todo), unit="img", desc="render",
               disable=not progress, dynamic_ncols=True)
    pool = None
    try:
        if workers > 1 and tasks:
            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_render_task, tasks)
        else:
            results = map(_render_task, tasks)
        it = iter(results)
        for k in todo:
            need = counts[k]
            got = 0
            pending = {"images": [], "identity": [], "motion": [], "index": []}
            while got < need:
                part = next(it)
                for key in pending:
                    pending[key].append(part[key])
                got += len(part["images"])
                bar.update(len(part["images"]))
            _write_shard(root / names[k], {key: np.concatenate(v) for key, v in pending.items()})
            done[k] = True
            record()
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return meta


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m engine.demo_world.dataset",
        description="Render the demo-world face data set into .npz shards (resumable: the same command again\n"
                    "keeps the complete shards and renders the rest).",
        epilog="examples:\n  python -m engine.demo_world.dataset --out data/faces --n 20000 --workers 2\n"
               "  python -m engine.demo_world.dataset --out data/small --n 2000 --size 64 --per-identity 4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--n", type=int, default=20000, help="number of samples (default 20000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the identities and motions (default 0; sample i depends only on seed and i)")
    parser.add_argument("--size", type=int, default=128, help="image size in px (default 128)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--per-identity", type=int, default=1,
                        help="consecutive samples that share one identity (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="render processes (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    try:
        meta = write_dataset(args.out, args.n, seed=args.seed, size=args.size, shard_size=args.shard_size,
                             per_identity=args.per_identity, workers=args.workers, progress=not args.no_progress)
    except UsageError as e:
        fail(parser.prog, str(e))
    except KeyboardInterrupt:
        fail(parser.prog, "interrupted (complete shards are kept; run again to resume)")
    print(f"{args.out}: {meta['count']} samples in {len(meta['shards'])} shards ({args.size} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
