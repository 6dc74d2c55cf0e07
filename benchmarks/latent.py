"""Latent geometry: PCA time, local-basis time, Jacobian spectra, traversal accuracy.

Two generators: the built-in demo generator (z_dim = w_dim = 128, 4 mapping layers) and a
random-weight 512-wide, 8-layer mapping network (``GeneratorConfig.nvlabs(z_dim=512, w_dim=512,
img_resolution=8, mapping_layers=8)``, StyleGAN2 initialisation). For each:

* ``pca``: seconds for ``engine.latent.pca.global_basis`` over N mapped z (default 1,000,000,
  no cache).
* ``local``: seconds per ``engine.latent.local.local_basis`` call (Jacobian by autodiff + SVD).
* ``spectrum``: singular values of dw/dz at a few seeds, and how many are "~0", i.e. below
  ``ZERO_RTOL`` (1e-3) x the largest. (MoCoGAN-HD reports > 400 of 512 near zero for FFHQ.)
* ``traversal``: for several seeds and directions i, move the seed's w by the same W
  displacement ``d`` (one global stdev of component i) three ways: ``local`` —
  ``local_traverse(mode="straight")``, a path in z that heads along the starting local direction
  u_i as far as the tangent space allows; ``local-follow`` — ``local_traverse(mode="follow")``,
  a path in z that follows the (turning) local singular direction; both end on m(z) by
  construction; ``global`` — the global PCA direction i, ``w + d v_i``. Per end point:

  - ``step``: |w_end - w_0| (both should be ~d);
  - ``off_direction``: the part of the displacement orthogonal to the method's intended direction
    at the start (local u_i / global v_i), as a fraction of |w_end - w_0|. Zero for the global
    step by construction; for the local path it measures how much the curved path drifts into
    the other local coordinates;
  - ``null_fraction``: fraction of the displacement that lies in the start point's local null
    space (the local directions with singular value ~0), i.e. where the mapping cannot move w
    to first order;
  - ``manifold_distance``: min over z of |m(z) - w_end| / |w_end - w_0|, by Adam on z from the
    start z (``--gd-steps`` steps), and for the local end point also the exact |m(z_end) - w_end|;
  - ``pixel_change``: mean |image(w_end) - image(w_0)| in 0-255 levels per unit of |w_end - w_0|.

    python -m benchmarks.latent                   # full run, a few minutes on 2 cores
    python -m benchmarks.latent --quick           # smoke run, seconds
    python -m benchmarks.latent --n-samples 200000 --seeds 8 --directions 8
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import environment
from engine.latent.local import local_basis, local_traverse, singular_spectrum
from engine.latent.pca import global_basis
from engine.latent.report import ZERO_RTOL, near_zero_count
from engine.runtime import tune_cpu_allocator
from engine.synthesis.checkpoints import load_generator
from engine.synthesis.networks import Generator, GeneratorConfig, seed_to_z

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"
MOCOGAN_HD_FFHQ = "MoCoGAN-HD (Tian et al. 2021, Fig. 8): > 400 of 512 singular values near zero for StyleGAN2 FFHQ"


def random_mapping_generator(width: int = 512, layers: int = 8, seed: int = 0) -> Generator:
    """Random-init generator with a ``width``-wide, ``layers``-deep mapping net (8 px synthesis)."""
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig.nvlabs(z_dim=width, w_dim=width, img_resolution=8, mapping_layers=layers))
    return G.eval().requires_grad_(False)


def _z(seed: int, G) -> torch.Tensor:
    return torch.from_numpy(seed_to_z(seed, G.z_dim)).to(torch.float32)


def manifold_distance(G, z_start: torch.Tensor, w_target: torch.Tensor, steps: int, lr: float = 0.03) -> np.ndarray:
    """min_z |m(z) - w_target| per row, estimated by Adam on z from ``z_start`` [B, z_dim]; returns [B]."""
    z = z_start.clone().detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best = torch.full((z.shape[0],), float("inf"))
    with torch.enable_grad():
        for _ in range(steps + 1):
            dist = (G.mapping.forward_w(z) - w_target).norm(dim=1)
            best = torch.minimum(best, dist.detach())
            opt.zero_grad()
            dist.square().sum().backward()
            opt.step()
    return best.numpy().astype(np.float64)


def measure_generator(name: str, G, args) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "z_dim": G.z_dim, "w_dim": G.w_dim,
                           "mapping_layers": G.config.mapping_layers, "num_ws": G.num_ws,
                           "img_resolution": G.img_resolution}

    # --- global PCA time
    t0 = time.perf_counter()
    gb = global_basis(G, n_samples=args.n_samples, seed=0, cache_dir=False, progress=not args.quiet)
    pca_s = time.perf_counter() - t0
    ratio = np.asarray(gb.explained_variance_ratio, dtype=np.float64)
    cum = np.cumsum(ratio)
    out["pca"] = {"n_samples": args.n_samples, "seconds": pca_s, "samples_per_s": args.n_samples / pca_s,
                  "top10_variance_ratio": ratio[:10].tolist(),
                  "components_for_90pct": int(np.searchsorted(cum, 0.9 - 1e-12) + 1)}
    print(f"  [{name}] PCA of {args.n_samples} w: {pca_s:.2f} s", flush=True)

    # --- local basis time per z
    local_basis(G, _z(10_000, G))  # warm-up
    times = []
    for s in range(args.local_repeats):
        t0 = time.perf_counter()
        local_basis(G, _z(10_001 + s, G))
        times.append(time.perf_counter() - t0)
    out["local"] = {"repeats": len(times), "median_s": statistics.median(times), "min_s": min(times),
                    "times_s": times}
    print(f"  [{name}] local basis: {statistics.median(times) * 1e3:.1f} ms per z (median of {len(times)})", flush=True)

    # --- spectrum
    spec_seeds = list(range(args.spectrum_seeds))
    spectra = singular_spectrum(G, torch.cat([_z(s, G) for s in spec_seeds]))
    out["spectrum"] = {
        "seeds": spec_seeds, "zero_rtol": ZERO_RTOL, "n_singular_values": int(spectra.shape[1]),
        "near_zero": [near_zero_count(s)[0] for s in spectra],
        "near_zero_rtol_1e-2": [near_zero_count(s, 1e-2)[0] for s in spectra],
        "largest": [float(s.max()) for s in spectra], "smallest": [float(s.min()) for s in spectra],
        "condition_number": [float(s.max() / max(s.min(), 1e-300)) for s in spectra],
        "singular_values": [s.tolist() for s in spectra],
    }
    print(f"  [{name}] ~0 singular values (< {ZERO_RTOL:g} x largest): {out['spectrum']['near_zero']} "
          f"of {spectra.shape[1]}", flush=True)

    # --- traversal accuracy: the same W displacement by three methods
    methods = ("local", "local-follow", "global")
    rows = []
    ends: dict[str, list] = {m: [] for m in methods}  # per method: end w (local ones also end z)
    z0s, w0s = [], []
    for seed in range(args.seeds):
        z0 = _z(seed, G)
        with torch.no_grad():
            w0 = G.mapping.forward_w(z0)[0]
        lb = local_basis(G, z0)
        U = torch.from_numpy(lb.directions).double()
        s_full = np.asarray(lb.meta.get("singular_values", lb.stdev), dtype=np.float64)
        null_mask = torch.from_numpy(np.asarray(lb.stdev, dtype=np.float64) < ZERO_RTOL * s_full.max())
        U_null = U[null_mask]
        for i in range(min(args.directions, gb.k, lb.k)):
            d = float(gb.stdev[i])
            end_w, end_z, axis = {}, {}, {}
            for method, mode in (("local", "straight"), ("local-follow", "follow")):
                z_e, w_e = local_traverse(G, z0, i, d, n_substeps=args.substeps, mode=mode)
                end_z[method] = torch.as_tensor(z_e, dtype=torch.float32).reshape(1, -1)
                end_w[method] = torch.as_tensor(w_e, dtype=torch.float32).reshape(-1)
                axis[method] = U[i]
            end_w["global"] = w0 + d * torch.from_numpy(gb.directions[i])
            axis["global"] = torch.from_numpy(gb.directions[i]).double()
            for method in methods:
                delta = (end_w[method] - w0).double()
                step = float(delta.norm())
                along = float(delta @ axis[method])
                off = float((delta - along * axis[method]).norm()) / step if step > 0 else float("nan")
                null = float((U_null @ delta).norm()) / step if step > 0 and len(U_null) else 0.0
                rows.append({"seed": seed, "direction": i, "method": method, "d": d, "step": step,
                             "off_direction": off, "null_fraction": null})
                ends[method].append((end_z.get(method), end_w[method]))
            z0s.append(z0)
            w0s.append(w0)
    if rows:
        Z0 = torch.cat(z0s)
        W0 = torch.stack(w0s)
        with torch.no_grad():
            def img(w):
                return G.synthesis(w.unsqueeze(1).expand(-1, G.num_ws, -1), noise_mode="const").double() * 127.5
            I0 = img(W0)
        for mi, method in enumerate(methods):
            W_e = torch.stack([w for _, w in ends[method]])
            dist_gd = manifold_distance(G, Z0, W_e, args.gd_steps)
            exact = None
            if method != "global":  # a path in z: the end point's own distance to m(z_end)
                with torch.no_grad():
                    exact = (G.mapping.forward_w(torch.cat([z for z, _ in ends[method]])) - W_e).norm(dim=1).numpy()
            with torch.no_grad():
                pix = (img(W_e) - I0).abs().mean(dim=(1, 2, 3)).numpy()
            for j in range(len(ends[method])):
                r = rows[len(methods) * j + mi]
                r["manifold_distance_gd"] = float(dist_gd[j]) / r["step"]
                r["manifold_distance"] = r["manifold_distance_gd"]
                if exact is not None:
                    r["manifold_distance_exact"] = float(exact[j]) / r["step"]
                    r["manifold_distance"] = min(r["manifold_distance_gd"], r["manifold_distance_exact"])
                r["pixel_change"] = float(pix[j]) / r["step"]
    summary = {}
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        if sel:
            summary[method] = {key: float(np.mean([r[key] for r in sel]))
                               for key in ("step", "off_direction", "null_fraction", "manifold_distance",
                                           "pixel_change")}
            summary[method]["n"] = len(sel)
    out["traversal"] = {"seeds": args.seeds, "directions": args.directions, "substeps": args.substeps,
                        "gd_steps": args.gd_steps, "displacement": "one global stdev of component i (W units)",
                        "rows": rows, "mean": summary}
    return out


def format_table(gens: list[dict[str, Any]]) -> str:
    lines = []
    h = f"{'generator':<12} {'z->w':>9} {'N':>9} {'PCA s':>8} {'local ms/z':>10} {'~0 SVs (<1e-3 max)':>20} {'cond':>9}"
    lines += [h, "-" * len(h)]
    for g in gens:
        sp = g["spectrum"]
        lines.append(f"{g['name']:<12} {g['z_dim']:>4}->{g['w_dim']:<4} {g['pca']['n_samples']:>9} "
                     f"{g['pca']['seconds']:>8.2f} {g['local']['median_s'] * 1e3:>10.1f} "
                     f"{str(sp['near_zero']) + ' / ' + str(sp['n_singular_values']):>20} "
                     f"{statistics.median(sp['condition_number']):>9.3g}")
    lines.append("")
    h = (f"{'generator':<12} {'method':<12} {'n':>3} {'|dw|':>7} {'off-dir':>8} {'null frac':>9} "
         f"{'manifold dist':>13} {'px / unit':>9}")
    lines += ["traversal accuracy (means; distances relative to |dw|)", h, "-" * len(h)]
    for g in gens:
        for method, m in g["traversal"]["mean"].items():
            lines.append(f"{g['name']:<12} {method:<12} {m['n']:>3} {m['step']:>7.3f} {m['off_direction']:>8.4f} "
                         f"{m['null_fraction']:>9.4f} {m['manifold_distance']:>13.4g} {m['pixel_change']:>9.3f}")
    return "\n".join(lines)


def plot(gens: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for g, color in zip(gens, ("tab:blue", "tab:orange", "tab:green")):
        for j, s in enumerate(g["spectrum"]["singular_values"]):
            s = np.asarray(s)
            ax.plot(np.arange(len(s)) / max(len(s) - 1, 1), s / s.max(), color=color, lw=1,
                    label=f"{g['name']} ({len(s)})" if j == 0 else None)
    ax.axhline(ZERO_RTOL, color="grey", ls=":", lw=0.8, label=f"~0 threshold ({ZERO_RTOL:g})")
    ax.set_yscale("log")
    ax.set_xlabel("index / (n - 1), sorted descending")
    ax.set_ylabel("singular value / largest")
    ax.set_title("spectrum of dw/dz", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    labels = [g["name"] for g in gens]
    x = np.arange(len(gens))
    for ax, key, title in ((axes[1], "manifold_distance", "distance of end point to W = m(Z) / |dw|"),
                           (axes[2], "pixel_change", "mean |pixel change| (0-255) per unit |dw|")):
        for off, method in ((-0.27, "local"), (0.0, "local-follow"), (0.27, "global")):
            vals = [g["traversal"]["mean"].get(method, {}).get(key, np.nan) for g in gens]
            ax.bar(x + off, vals, width=0.27, label=method)
        ax.set_xticks(x)
        ax.set_xticklabels(labels)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 5000 samples, 1 seed, 2 directions")
    p.add_argument("--n-samples", type=int, default=None, help="z mapped for the PCA (default 1000000; --quick 5000)")
    p.add_argument("--seeds", type=int, default=None, help="traversal seeds 0..S-1 (default 4; --quick 1)")
    p.add_argument("--directions", type=int, default=None, help="traversal directions 0..D-1 (default 5; --quick 2)")
    p.add_argument("--substeps", type=int, default=8, help="local_traverse substeps (default 8)")
    p.add_argument("--gd-steps", type=int, default=None, help="Adam steps for the manifold distance (default 300; --quick 30)")
    p.add_argument("--local-repeats", type=int, default=None, help="timed local_basis calls (default 5; --quick 2)")
    p.add_argument("--spectrum-seeds", type=int, default=3, help="seeds in the spectrum (default 3)")
    p.add_argument("--random-width", type=int, default=512, help="width of the random mapping net (default 512)")
    p.add_argument("--random-layers", type=int, default=8, help="depth of the random mapping net (default 8)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where latent.json / latent.png go")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    q = args.quick
    args.n_samples = args.n_samples or (5000 if q else 1_000_000)
    args.seeds = args.seeds if args.seeds is not None else (1 if q else 4)
    args.directions = args.directions if args.directions is not None else (2 if q else 5)
    args.gd_steps = args.gd_steps if args.gd_steps is not None else (30 if q else 300)
    args.local_repeats = args.local_repeats if args.local_repeats is not None else (2 if q else 5)
    for name in ("n_samples", "seeds", "directions", "substeps", "local_repeats", "spectrum_seeds", "random_width",
                 "random_layers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    env = environment(torch.device("cpu"))
    print(f"# {env['device_name']}, torch {env['torch_version']}, {env['num_threads']} threads, "
          f"commit {env['git_commit']}", flush=True)
    rand_name = f"random{args.random_width}"
    gens = [measure_generator("demo", load_generator("demo"), args),
            measure_generator(rand_name, random_mapping_generator(args.random_width, args.random_layers), args)]
    print()
    table = format_table(gens)
    print(table)
    print(f"\nreference: {MOCOGAN_HD_FFHQ}")
    report = {"benchmark": "latent", "environment": env,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "zero_rtol": ZERO_RTOL, "reference": MOCOGAN_HD_FFHQ, "generators": gens}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "latent.json").write_text(json.dumps(report, indent=1) + "\n")
    if not args.no_plot:
        plot(gens, args.out_dir / "latent.png")
    print(f"wrote {args.out_dir / 'latent.json'}" + ("" if args.no_plot else f" and {args.out_dir / 'latent.png'}"))
    return report


if __name__ == "__main__":
    main()
    sys.exit(0)
