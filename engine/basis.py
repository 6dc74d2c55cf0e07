"""Latent bases of a StyleGAN2 generator: ``python -m engine.basis global|local|show|name ...``.

* ``global``: PCA of many mapped w (GANSpace); cached per checkpoint, written as .npz.
* ``local``: SVD of the mapping network's Jacobian dw/dz at one seed (MoCoGAN-HD), with a plot
  of the singular-value spectrum at a few seeds and the count of singular values that are ~0.
* ``show``: a grid image, one row per direction, columns from -sigma to +sigma (the middle column
  is the seed's own image).
* ``name``: store one component of a basis under a name (optionally on a layer range) in a JSON
  direction set (``engine.latent.direction_set``), which the motion drivers read.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from engine.cli_util import (
    ArgumentParser,
    UsageError,
    fail,
    finite_float,
    parse_int_ranges,
    resolve_device,
)
from engine.latent.direction_set import DirectionSet, valid_name
from engine.latent.latent_basis import LatentBasis, generator_hash
from engine.latent.local import local_basis, singular_spectrum
from engine.latent.pca import basis_cache_path, global_basis
from engine.latent.report import (
    ZERO_RTOL,
    near_zero_count,
    plot_spectrum,
    render_grid,
    variance_summary,
)
from engine.runtime import tune_cpu_allocator
from engine.synthesis.checkpoints import CheckpointError, load_generator
from engine.synthesis.networks import seed_to_z
from engine.synthesis.presets import cache_dir

PROG = "python -m engine.basis"
EPILOG = """examples:
  # global PCA basis of the demo generator (1,000,000 mapped z by default; cached per checkpoint)
  python -m engine.basis global --out global.npz

  # local (Jacobian SVD) basis at seed 7, with the singular-value spectrum of 3 seeds
  python -m engine.basis local --seed 7 --out local7.npz --plot spectrum.png

  # grid: rows = components 0-9, columns = -3 sigma ... +3 sigma (middle column = seed 7 itself)
  python -m engine.basis show --seed 7 --basis global.npz --components 0-9 --out grid.png
  python -m engine.basis show --seed 7 --local --components 0-4 --layers 4-7 --out grid_local.png

  # name component 7 (acting on layers 4-7) "mouth_open" in a direction set
  python -m engine.basis name --basis global.npz --component 7 --name mouth_open --layers 4-7 \\
      --set directions.json

  # any checkpoint instead of the built-in demo generator
  python -m engine.basis global --generator ffhq.pkl --n-samples 1000000 --out ffhq_global.npz
"""



# ---------------------------------------------------------------------------------------------
# Argument parsing helpers


def parse_index_list(text: str, what: str) -> list[int]:
    """``"0-9"``, ``"1,4,7"`` or ``"0-3,8"`` → a list of non-negative integers (order kept)."""
    return parse_int_ranges(text, what, max_count=100_000)


def parse_layer_range(text: Optional[str], num_ws: Optional[int]) -> Optional[tuple[int, int]]:
    """``"4-7"`` or ``"5"`` → (start, end) inclusive, checked against ``num_ws`` when known."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise UsageError(f"bad layer range {text!r}: use START-END (inclusive), e.g. 4-7")
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) is not None else start
    if end < start:
        raise UsageError(f"bad layer range {text!r}: end is before start")
    if num_ws is not None and end >= num_ws:
        raise UsageError(f"layer range {start}-{end} is outside this generator's layers 0-{num_ws - 1}")
    return start, end


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"seed must be in 0 .. 2**32-1, got {value}")
    return value


def build_parser() -> ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", metavar="{global,local,show,name}", parser_class=ArgumentParser)
    sub.required = True

    def common(sp: ArgumentParser, generator_default: Optional[str] = "demo") -> None:
        sp.add_argument("--generator", default=generator_default,
                        help="checkpoint path (.pkl, .pt, .safetensors) or preset name "
                             f"(default {generator_default or 'none'}; demo is built in)")
        sp.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or a GPU index (default cpu)")

    g = sub.add_parser("global", help="PCA of mapped w (global basis)", formatter_class=fmt,
                       description="PCA of N mapped w = m(z), z ~ N(0, I): directions V, eigenvalues, mean.",
                       epilog="example:\n  python -m engine.basis global --n-samples 1000000 --out global.npz\n")
    common(g)
    g.add_argument("--n-samples", type=positive_int, default=1_000_000, help="number of z to map (default 1000000)")
    g.add_argument("--k", type=positive_int, default=None, help="components to keep (default w_dim)")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of the z samples (default 0)")
    g.add_argument("--batch-size", type=positive_int, default=16384, help="z per mapping call (default 16384)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the per-checkpoint cache")
    g.add_argument("--out", type=Path, default=Path("global_basis.npz"), help="basis file (default global_basis.npz)")

    lo = sub.add_parser("local", help="SVD of the mapping Jacobian at a seed (local basis)", formatter_class=fmt,
                        description="SVD of J = dw/dz at z(seed): W directions U, singular values S, z steps Vh.",
                        epilog="example:\n  python -m engine.basis local --seed 7 --out local7.npz --plot spectrum.png\n")
    common(lo)
    lo.add_argument("--seed", type=seed_int, required=True, help="seed whose z anchors the basis")
    lo.add_argument("--k", type=positive_int, default=None, help="components to keep (default min(w_dim, z_dim))")
    lo.add_argument("--out", type=Path, default=None, help="basis file (default local_seedS.npz)")
    lo.add_argument("--plot", type=Path, default=None,
                    help="write the singular-value spectrum (sorted, log y) of --plot-seeds seeds as PNG")
    lo.add_argument("--plot-seeds", type=positive_int, default=3,
                    help="how many seeds the spectrum plot shows: S, S+1, ... (default 3)")
    lo.add_argument("--zero-rtol", type=finite_float, default=ZERO_RTOL,
                    help=f"a singular value counts as ~0 below this fraction of the largest (default {ZERO_RTOL:g})")

    sh = sub.add_parser("show", help="render a grid: rows = directions, columns = -sigma..+sigma", formatter_class=fmt,
                        description="Rows = basis components, columns = x from -sigma to +sigma in stdev units; "
                                    "the middle column is the seed's unmodified image.",
                        epilog="examples:\n  python -m engine.basis show --seed 7 --basis global.npz --out grid.png\n"
                               "  python -m engine.basis show --seed 7 --local --layers 4-7 --out grid.png\n")
    common(sh)
    sh.add_argument("--seed", type=seed_int, required=True, help="seed of the identity")
    src = sh.add_mutually_exclusive_group(required=True)
    src.add_argument("--basis", type=Path, help="basis .npz written by 'global' or 'local'")
    src.add_argument("--global", dest="use_global", action="store_true",
                     help="compute (or read from the cache) the global basis")
    src.add_argument("--local", dest="use_local", action="store_true", help="compute the local basis at --seed")
    sh.add_argument("--n-samples", type=positive_int, default=1_000_000, help="with --global: z to map (default 1000000)")
    sh.add_argument("--components", default="0-9", help="components as N, A-B or a list (default 0-9)")
    sh.add_argument("--steps", type=positive_int, default=7, help="columns, odd (default 7)")
    sh.add_argument("--sigma", type=finite_float, default=3.0, help="outermost column at +-sigma stdevs (default 3)")
    sh.add_argument("--layers", default=None, help="edit only layers START-END (inclusive), e.g. 4-7 (default all)")
    sh.add_argument("--truncation", type=finite_float, default=0.7,
                    help="truncation psi of the identity (default 0.7, as the engine shows identities; 1 = none)")
    sh.add_argument("--trunc", dest="truncation", type=finite_float, default=argparse.SUPPRESS,
                    help=argparse.SUPPRESS)
    sh.add_argument("--out", type=Path, default=Path("basis_grid.png"), help="PNG to write (default basis_grid.png)")

    nm = sub.add_parser("name", help="add a named direction to a JSON direction set", formatter_class=fmt,
                        description="Store one basis component (unit vector, stdev, layer range, index, origin, "
                                    "checkpoint hash) under a name in a direction set JSON file.",
                        epilog="example:\n  python -m engine.basis name --basis global.npz --component 7 "
                               "--name mouth_open --layers 4-7 --set directions.json\n")
    nm.add_argument("--basis", type=Path, required=True, help="basis .npz written by 'global' or 'local'")
    nm.add_argument("--component", type=int, required=True, help="component index in the basis")
    nm.add_argument("--name", required=True, help="direction name (letters, digits, _ . -)")
    nm.add_argument("--layers", default=None, help="act on layers START-END (inclusive) only (default all)")
    nm.add_argument("--set", dest="set_path", type=Path, required=True, help="direction set JSON (created if missing)")
    nm.add_argument("--replace", action="store_true", help="overwrite an existing direction of that name")
    nm.add_argument("--generator", default=None,
                    help="optional: check the basis belongs to this checkpoint and the layers fit its num_ws")
    nm.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    return p


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _load_generator(name: str, device: torch.device):
    if device.type == "cpu":
        tune_cpu_allocator()
    return load_generator(name, device=device)


def _check_k(k: Optional[int], limit: int, what: str) -> None:
    if k is not None and k > limit:
        raise UsageError(f"--k {k} is larger than {what} = {limit}")


def _load_basis(path: Path, G=None):
    try:
        basis = LatentBasis.load(path)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if G is not None:
        if basis.w_dim != G.w_dim:
            raise UsageError(f"{path}: basis has w_dim {basis.w_dim}, the generator has {G.w_dim}")

        h = generator_hash(G)
        if basis.checkpoint_hash and basis.checkpoint_hash != h:
            raise UsageError(f"{path}: basis was computed for checkpoint {basis.checkpoint_hash[:12]}..., "
                             f"not this generator ({h[:12]}...); pass the matching --generator")
    return basis


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_global(args, G) -> int:
    _check_k(args.k, G.w_dim, "w_dim")
    if args.n_samples < 2:
        raise UsageError("--n-samples must be at least 2")

    k = args.k if args.k is not None else G.w_dim
    cache_file = None if args.no_cache else basis_cache_path(cache_dir() / "latent", generator_hash(G),
                                                                args.n_samples, k, args.seed)
    was_cached = cache_file is not None and cache_file.is_file()
    t0 = time.perf_counter()
    basis = global_basis(G, n_samples=args.n_samples, k=args.k, seed=args.seed, batch_size=args.batch_size,
                         cache_dir=False if args.no_cache else None, progress=True, device=args.device_obj)
    took = time.perf_counter() - t0
    print(f"global basis of checkpoint {generator_hash(G)[:12]}: {args.n_samples} samples (seed {args.seed}), "
          f"k = {basis.k}; {took:.2f} s" + (f" (read from the cache {cache_file})" if was_cached else ""))
    print(variance_summary(basis))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    basis.save(args.out)
    print(f"wrote {os.fspath(args.out)}")
    return 0


def cmd_local(args, G) -> int:
    _check_k(args.k, min(G.w_dim, G.z_dim), "min(w_dim, z_dim)")
    if not 0 < args.zero_rtol < 1:
        raise UsageError("--zero-rtol must be between 0 and 1")
    z = torch.from_numpy(seed_to_z(args.seed, G.z_dim)).to(device=args.device_obj, dtype=torch.float32)
    basis = local_basis(G, z, k=args.k)
    s_full = np.asarray(basis.meta.get("singular_values", np.sqrt(basis.explained_variance)), dtype=np.float64)
    n0, thr = near_zero_count(s_full, args.zero_rtol)
    print(f"local basis at seed {args.seed}: k = {basis.k}, singular values {s_full.max():.4g} (largest) "
          f"... {s_full.min():.4g} (smallest)")
    print(f"~0 singular values (< {args.zero_rtol:g} x largest = {thr:.4g}): {n0} of {len(s_full)}")
    print(variance_summary(basis))
    out = args.out if args.out is not None else Path(f"local_seed{args.seed}.npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    basis.save(out)
    print(f"wrote {os.fspath(out)}")
    if args.plot is not None:
        seeds = [args.seed + i for i in range(args.plot_seeds)]
        if seeds[-1] >= 2**32:
            raise UsageError("--seed + --plot-seeds runs past the largest seed")
        zs = np.concatenate([seed_to_z(s, G.z_dim) for s in seeds])
        spectra = singular_spectrum(G, torch.from_numpy(zs).to(device=args.device_obj, dtype=torch.float32))
        for seed, s in zip(seeds, spectra):
            n, t = near_zero_count(s, args.zero_rtol)
            print(f"  seed {seed}: {n} of {len(s)} singular values ~0 (< {t:.4g})")
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot_spectrum(spectra, seeds, args.zero_rtol, args.plot,
                      f"dw/dz spectrum, checkpoint {basis.checkpoint_hash[:12]} ({G.z_dim} -> {G.w_dim})")
        print(f"wrote {os.fspath(args.plot)}")
    return 0


def cmd_show(args, G) -> int:
    if args.steps % 2 == 0:
        raise UsageError(f"--steps must be odd so the middle column is the identity, got {args.steps}")
    if args.sigma <= 0:
        raise UsageError("--sigma must be positive")
    components = parse_index_list(args.components, "component")
    layers = parse_layer_range(args.layers, G.num_ws)
    z = torch.from_numpy(seed_to_z(args.seed, G.z_dim)).to(device=args.device_obj, dtype=torch.float32)
    if args.basis is not None:
        basis = _load_basis(args.basis, G)
    elif args.use_global:

        basis = global_basis(G, n_samples=args.n_samples, seed=0, progress=True, device=args.device_obj)
    else:

        basis = local_basis(G, z)
    bad = [c for c in components if c >= basis.k]
    if bad:
        raise UsageError(f"component {bad[0]} is out of range: the basis has components 0-{basis.k - 1}")
    with torch.inference_mode():
        ws = G.mapping(z, truncation_psi=args.truncation, truncation_cutoff=G.config.truncation_cutoff)[0]
    grid = render_grid(G, basis, ws, components, args.steps, args.sigma, layers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(args.out)
    print(f"wrote {os.fspath(args.out)}: {len(components)} rows (components {args.components}) x {args.steps} "
          f"columns (x = -{args.sigma:g} .. +{args.sigma:g} stdev{'' if layers is None else f', layers {layers[0]}-{layers[1]}'})"
          f", {basis.origin} basis")
    return 0


def cmd_name(args, G) -> int:
    if not valid_name(args.name):
        raise UsageError(f"bad direction name {args.name!r}: use a letter or _ then letters, digits, _ . - "
                         "(at most 64 characters)")
    basis = _load_basis(args.basis, G)
    if not 0 <= args.component < basis.k:
        raise UsageError(f"component {args.component} is out of range: the basis has components 0-{basis.k - 1}")
    layers = parse_layer_range(args.layers, G.num_ws if G is not None else None)
    if args.set_path.exists():
        try:
            ds = DirectionSet.load(args.set_path, num_ws=G.num_ws if G is not None else None)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    else:
        ds = DirectionSet()
    try:
        d = ds.add_from_basis(basis, args.component, args.name, layers=layers, source=args.basis.name,
                              replace=args.replace)
    except ValueError as exc:
        raise UsageError(f"{args.set_path}: {exc}") from None
    args.set_path.parent.mkdir(parents=True, exist_ok=True)
    ds.save(args.set_path)
    where = "all layers" if d.layers is None else f"layers {d.layers[0]}-{d.layers[1]}"
    print(f"{args.set_path}: {d.name} = {basis.origin} component {d.component} (stdev {d.stdev:.4g}, {where}); "
          f"{len(ds)} direction(s) in the set")
    return 0


COMMANDS = {"global": cmd_global, "local": cmd_local, "show": cmd_show, "name": cmd_name}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        args.device_obj = resolve_device(args.device)
        G = _load_generator(args.generator, args.device_obj) if args.generator is not None else None
        return COMMANDS[args.command](args, G)
    except (UsageError, CheckpointError) as exc:
        fail(PROG, str(exc))
    except OSError as exc:
        fail(PROG, f"{exc.filename}: {exc.strerror or exc}" if exc.filename else str(exc))
    except ValueError as exc:  # bad values found by the latent modules (shapes, ranges, files)
        fail(PROG, str(exc))


if __name__ == "__main__":
    sys.exit(main())
