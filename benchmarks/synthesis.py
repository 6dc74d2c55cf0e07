"""Synthesis-network throughput: ms/frame and frames/s per backend x resolution x batch x dtype.

Times one synthesis backend call (``engine.synthesis.backends``: ``torch`` =
``G.synthesis(ws, noise_mode="const")`` under ``torch.inference_mode``; ``onnx`` = the exported
graph on onnxruntime, float32; ``trt`` = a TensorRT FP16 engine, CUDA only). The mapping network
runs once, outside the timed region. Each cell gets warm-up passes, then timed
passes until ``--repeats`` are done or the cell has used ``--cell-seconds``; the table shows
the median. Results go to ``benchmarks/results/synthesis.json`` and ``synthesis.png``.

    python -m benchmarks.synthesis                       # CPU defaults, a few minutes on 2 cores
    python -m benchmarks.synthesis --quick               # smoke run, seconds
    python -m benchmarks.synthesis --device cuda --resolutions 256 512 1024 --batches 1 4 16 \\
        --dtypes float32 float16
    python -m benchmarks.synthesis --generator path/to/network.pkl --batches 1 4
    python -m benchmarks.synthesis --generator demo --batches 1 4 16   # the built-in demo generator
    python -m benchmarks.synthesis --no-malloc-tuning    # CPU: glibc's default allocator behaviour
    python -m benchmarks.synthesis --backends torch onnx --resolutions 128 256   # CPU backends side by side
    python -m benchmarks.synthesis --device cuda --backends torch trt --cuda-graphs --dtypes float16

On CPU the engine's tools call ``engine.runtime.tune_cpu_allocator()`` (glibc keeps freed
activations in the heap instead of page-faulting fresh ``mmap`` pages every pass; ~35% faster at
512 px on a 2-core VM), and so does this benchmark unless ``--no-malloc-tuning`` is given. The
JSON records whether it was on, and any ``MALLOC_*`` / ``LD_PRELOAD`` environment.

``--generator ffhq-shapes`` (default) builds random-weight generators with the official NVlabs
stylegan2-ada-pytorch configurations: 128 px channel_base 16384, 256 px ``paper256``
(channel_base 16384), 512/1024 px ``stylegan2`` (channel_base 32768); channel_max 512,
8 mapping layers, conv_clamp 256. Weights do not change the arithmetic, so timings hold for
trained networks of the same shape.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    REPO_ROOT,
    build_random_generator,
    environment,
    ffhq_shape_config,
)
from engine.runtime import tune_cpu_allocator
from engine.synthesis.backends import TorchBackend, create_backend
from engine.synthesis.checkpoints import load_generator
from engine.synthesis.networks import Generator

DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


# --------------------------------------------------------------------------------------------
# Generators


def load_checkpoint_generator(path: str) -> Generator:
    return load_generator(path).eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_synthesis(
    G,
    ws: torch.Tensor,
    warmup: int,
    repeats: int,
    cell_seconds: float,
) -> list[float]:
    """Seconds per synthesis call (``G.synthesis(ws)`` for a Generator, ``G(ws)`` for a backend):
    ``warmup`` untimed calls, then up to ``repeats`` timed ones, stopping early (after at least
    one) once ``cell_seconds`` have been spent."""
    device = ws.device
    fn = (lambda w: G.synthesis(w, noise_mode="const")) if isinstance(G, Generator) else G
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(warmup):
            fn(ws)
            _sync(device)
            if time.perf_counter() - start > cell_seconds:
                break
        times: list[float] = []
        spent = 0.0
        while len(times) < repeats:
            _sync(device)
            t0 = time.perf_counter()
            fn(ws)
            _sync(device)
            dt = time.perf_counter() - t0
            times.append(dt)
            spent += dt
            if spent > cell_seconds:
                break
    return times


def prepare(G: Generator, dtype_name: str, device: torch.device, channels_last: bool) -> Generator:
    """A copy of ``G`` on ``device`` in ``dtype`` (the float32 master stays untouched)."""
    G = copy.deepcopy(G).to(device=device, dtype=DTYPES[dtype_name])
    if channels_last:
        G.set_channels_last(True)
    return G


def run_cell(
    G: Generator,
    batch: int,
    dtype_name: str,
    warmup: int,
    repeats: int,
    cell_seconds: float,
    seed: int = 0,
    backend=None,
) -> dict[str, Any]:
    """Time ``G.synthesis`` (``G`` already prepared), or ``backend(ws)`` when given, at one batch size."""
    device = G.device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.z_dim, generator=gen).to(device)
    with torch.inference_mode():
        ws = G.mapping(z, truncation_psi=1.0).float()
    times = time_synthesis(backend if backend is not None else G, ws, warmup=warmup, repeats=repeats,
                           cell_seconds=cell_seconds)
    median_s = statistics.median(times)
    return {
        "backend": backend.name if backend is not None else "torch",
        **({"backend_info": backend.describe()} if backend is not None else {}),
        "resolution": G.img_resolution,
        "batch": batch,
        "dtype": dtype_name,
        "device": device.type,
        "channels_last": bool(G.synthesis.channels_last),
        "repeats": len(times),
        "warmup": warmup,
        "median_ms_per_batch": median_s * 1e3,
        "min_ms_per_batch": min(times) * 1e3,
        "ms_per_frame": median_s * 1e3 / batch,
        "frames_per_s": batch / median_s,
        "times_ms": [t * 1e3 for t in times],
    }


def _backend_cells(backends: list[str], dtype_names: list[str], cuda: bool) -> list[tuple[str, str]]:
    """(backend, dtype) pairs to time: torch at every dtype; onnx at float32; trt at float16."""
    cells = []
    for b in backends:
        if b == "torch":
            cells += [("torch", d) for d in dtype_names]
        elif b == "onnx":
            cells.append(("onnx", "float32"))
        elif b == "trt":
            cells.append(("trt", "float16"))
    return cells


def _make_backend(name: str, G: Generator, device: torch.device, dtype_name: str, max_batch: int, args):
    if name == "torch":
        return TorchBackend(G, device=device, dtype=dtype_name, channels_last=args.channels_last,
                            compile=args.compile, cuda_graphs=args.cuda_graphs)
    cache = args.out_dir / "cache"
    return create_backend(name, G, device=device, max_batch=max(max_batch, 1), cache_dir=cache / name)


# --------------------------------------------------------------------------------------------
# Output


def format_table(results: list[dict[str, Any]]) -> str:
    header = (f"{'backend':>7} {'res':>5} {'batch':>5} {'dtype':>9} {'ms/batch':>10} {'ms/frame':>10} "
              f"{'frames/s':>9} {'n':>3}")
    lines = [header, "-" * len(header)]
    for r in results:
        be = r.get("backend", "torch")
        if "error" in r:
            lines.append(f"{be:>7} {r['resolution']:>5} {r['batch']:>5} {r['dtype']:>9}  error: {r['error']}")
            continue
        lines.append(
            f"{be:>7} {r['resolution']:>5} {r['batch']:>5} {r['dtype']:>9} {r['median_ms_per_batch']:>10.2f}"
            f" {r['ms_per_frame']:>10.2f} {r['frames_per_s']:>9.2f} {r['repeats']:>3}"
        )
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], env: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    ok = [r for r in results if "error" not in r]
    fig, (ax_ms, ax_fps) = plt.subplots(1, 2, figsize=(11, 4.2))
    series = sorted({(r.get("backend", "torch"), r["dtype"], r["batch"]) for r in ok})
    for backend, dtype_name, batch in series:
        rows = sorted(
            (r for r in ok if r.get("backend", "torch") == backend and r["dtype"] == dtype_name
             and r["batch"] == batch),
            key=lambda r: r["resolution"],
        )
        res = [r["resolution"] for r in rows]
        label = f"{backend} {dtype_name}, batch {batch}"
        ax_ms.plot(res, [r["ms_per_frame"] for r in rows], marker="o", label=label)
        ax_fps.plot(res, [r["frames_per_s"] for r in rows], marker="o", label=label)
    for ax, ylabel in ((ax_ms, "ms / frame (median)"), (ax_fps, "frames / s")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("resolution (px)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        resolutions = sorted({r["resolution"] for r in ok})
        if resolutions:
            ax.set_xticks(resolutions)
            ax.set_xticklabels([str(r) for r in resolutions])
    if series:
        ax_fps.legend(fontsize=8)
    fig.suptitle(
        f"synthesis, noise_mode=const - {env['device_name']} ({env['device']}, "
        f"{env['num_threads']} threads), torch {env['torch_version']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------
# CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.synthesis",
        description="Time G.synthesis per resolution x batch x dtype; write JSON + PNG.",
    )
    p.add_argument("--resolutions", type=int, nargs="+", default=None,
                   help="ffhq-shapes resolutions (default: 128 256 512 1024; --quick: 128)")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="batch sizes (default: 1 4; --quick: 1)")
    p.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None,
                   help="dtypes (default: float32 on CPU, float32 float16 on CUDA)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--generator", default="ffhq-shapes",
                   help="'ffhq-shapes' (random weights in the official NVlabs FFHQ configurations, "
                        "default), or anything load_generator takes: a checkpoint path or a preset "
                        "such as 'demo'")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 warm-up, 2 timed passes, small defaults")
    p.add_argument("--warmup", type=int, default=None, help="untimed passes per cell (default 1 CPU, 5 CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="max timed passes per cell (default 5 CPU, 50 CUDA)")
    p.add_argument("--cell-seconds", type=float, default=None,
                   help="stop timing a cell after this many seconds (default 8 CPU, 5 CUDA)")
    p.add_argument("--channels-last", action="store_true", help="run synthesis in NHWC")
    p.add_argument("--backends", nargs="+", choices=["torch", "onnx", "trt"], default=["torch"],
                   help="synthesis backends to time (default torch; onnx runs float32 only, trt CUDA fp16 only)")
    p.add_argument("--cuda-graphs", action="store_true", help="torch on CUDA: replay a captured CUDA graph")
    p.add_argument("--compile", action="store_true", help="torch: torch.compile the synthesis")
    p.add_argument("--no-malloc-tuning", dest="malloc_tuning", action="store_false",
                   help="CPU: leave glibc's allocator as it is (by default freed activations stay in "
                        "the heap, as in the engine's tools)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--channel-base", type=int, default=None, help="ffhq-shapes: override channel_base")
    p.add_argument("--channel-max", type=int, default=512, help="ffhq-shapes: channel_max")
    p.add_argument("--z-dim", type=int, default=512, help="ffhq-shapes: z_dim = w_dim")
    p.add_argument("--mapping-layers", type=int, default=8, help="ffhq-shapes: mapping layers")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                   help="where synthesis.json / synthesis.png go (default benchmarks/results)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    malloc_tuned = tune_cpu_allocator() if args.malloc_tuning and device.type == "cpu" else False

    cuda = device.type == "cuda"
    resolutions = args.resolutions or ([128] if args.quick else [128, 256, 512, 1024])
    batches = args.batches or ([1] if args.quick else [1, 4])
    dtype_names = args.dtypes or (["float32", "float16"] if cuda else ["float32"])
    warmup = args.warmup if args.warmup is not None else (1 if args.quick or not cuda else 5)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else (50 if cuda else 5))
    cell_seconds = args.cell_seconds if args.cell_seconds is not None else (
        2.0 if args.quick else (5.0 if cuda else 8.0))

    if args.generator == "ffhq-shapes":
        generators = (
            (res, lambda res=res: build_random_generator(ffhq_shape_config(
                res, channel_base=args.channel_base, channel_max=args.channel_max,
                z_dim=args.z_dim, mapping_layers=args.mapping_layers)))
            for res in resolutions
        )
    else:
        generators = iter([(None, lambda: load_checkpoint_generator(args.generator))])

    env = environment(device)
    print(f"# {env['device_name']} ({env['device']}), torch {env['torch_version']}, "
          f"{env['num_threads']} threads, commit {env['git_commit']}"
          f"{', glibc malloc tuned' if malloc_tuned else ''}", flush=True)
    results: list[dict[str, Any]] = []
    configs: dict[str, Any] = {}
    for _, make in generators:
        G = make()
        configs[str(G.img_resolution)] = G.config.to_dict()
        for backend_name, dtype_name in _backend_cells(args.backends, dtype_names, cuda):
            Gd = prepare(G, dtype_name, device, args.channels_last) if backend_name == "torch" else \
                prepare(G, "float32", device, False)
            backend, error = None, None
            if backend_name != "torch" or args.cuda_graphs or args.compile:
                try:
                    backend = _make_backend(backend_name, G, device, dtype_name, max(batches), args)
                except Exception as exc:  # a backend that cannot run here is a row with its reason
                    error = f"{type(exc).__name__}: {exc}"[:300]
            for batch in batches:
                try:
                    if error:
                        raise RuntimeError(error)
                    row = run_cell(Gd, batch, dtype_name, warmup, repeats, cell_seconds, backend=backend)
                except (RuntimeError, NotImplementedError, ValueError) as exc:  # e.g. a dtype the device lacks
                    row = {"backend": backend_name, "resolution": G.img_resolution, "batch": batch,
                           "dtype": dtype_name, "device": device.type,
                           "error": str(exc) if error else f"{type(exc).__name__}: {exc}"[:300]}
                results.append(row)
                if "error" in row:
                    print(f"  {backend_name:>5} {row['resolution']:>5} px batch {batch:>3} {dtype_name:>9}: "
                          f"{row['error']}", flush=True)
                else:
                    print(f"  {backend_name:>5} {row['resolution']:>5} px batch {batch:>3} {dtype_name:>9}: "
                          f"{row['ms_per_frame']:9.2f} ms/frame {row['frames_per_s']:8.2f} frames/s "
                          f"({row['repeats']} passes)", flush=True)
            del Gd, backend
        del G
        if cuda:
            torch.cuda.empty_cache()

    print()
    print(format_table(results))

    report = {
        "benchmark": "synthesis",
        "environment": env,
        "settings": {
            "generator": args.generator,
            "noise_mode": "const",
            "resolutions": resolutions,
            "batches": batches,
            "dtypes": dtype_names,
            "warmup": warmup,
            "repeats": repeats,
            "cell_seconds": cell_seconds,
            "channels_last": args.channels_last,
            "backends": args.backends,
            "cuda_graphs": args.cuda_graphs,
            "compile": args.compile,
            "malloc_tuning": malloc_tuned,
            "quick": args.quick,
        },
        "configs": configs,
        "results": results,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.out_dir / "synthesis.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {json_path}")
    if not args.no_plot:
        png_path = args.out_dir / "synthesis.png"
        plot(results, env, png_path)
        print(f"wrote {png_path}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
