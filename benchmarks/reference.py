"""StyleCast's synthesis backends against NVlabs' reference code, same weights, same machine.

    python -m benchmarks.reference --nvlabs-repo ~/src/stylegan2-ada-pytorch
    python -m benchmarks.reference --nvlabs-repo ~/src/stylegan2-ada-pytorch --resolutions 128 256 --batch 1

The reference is imported from the user's own checkout of NVlabs/stylegan2-ada-pytorch at run
time (nothing of it is part of StyleCast). For each configuration (``demo``: the built-in
128 px demo network; ``ffhq-shapes``: random weights in the official NVlabs configurations),
both networks get the same state dict and the same ws; the benchmark checks that their images
agree (max |diff|), then times the reference's ``G.synthesis(ws, noise_mode="const",
force_fp32=True)`` and each StyleCast backend (``torch`` float32, ``onnx`` when installed) in
interleaved rounds, and reports medians and the speed-up. On a CPU the reference runs its
pure-PyTorch fallbacks of the custom ops (the CUDA kernels need a GPU).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import build_random_generator, environment, ffhq_shape_config
from engine.runtime import tune_cpu_allocator
from engine.synthesis.backends import create_backend
from engine.synthesis.networks import demo_generator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"


def load_reference(repo: Path):
    repo = Path(repo).expanduser().resolve()
    if not (repo / "training" / "networks.py").is_file():
        raise SystemExit(f"{repo}: not a checkout of NVlabs/stylegan2-ada-pytorch (no training/networks.py)")
    sys.path.insert(0, str(repo))
    try:
        import training.networks as networks  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(repo))
    return networks


def reference_generator(networks, G):
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    try:
        from formats import (
            nvlabs_init_kwargs,  # our own writer's mapping of a config to NVlabs kwargs
        )
    finally:
        sys.path.remove(str(REPO_ROOT / "tests"))
    ref = networks.Generator(**nvlabs_init_kwargs(G.config)).eval().requires_grad_(False)
    missing, unexpected = ref.load_state_dict(G.state_dict(), strict=False)
    if unexpected or not all(k.endswith("resample_filter") for k in missing):
        raise SystemExit(f"state dict mismatch with the reference: missing {missing}, unexpected {unexpected}")
    return ref


def _time(fn, ws, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn(ws)
        out.append(time.perf_counter() - t0)
    return out


def bench_config(name: str, G, networks, batch: int, repeats: int, backends: list[str], cache: Path) -> dict[str, Any]:
    ref = reference_generator(networks, G)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        ws = G.mapping(torch.randn(batch, G.z_dim, generator=gen), truncation_psi=0.7)
    fns = {"nvlabs": lambda w: ref.synthesis(w, noise_mode="const", force_fp32=True)}
    for b in backends:
        try:
            fns[b] = create_backend(b, G, max_batch=max(batch, 1), cache_dir=cache / b)
        except Exception as exc:  # e.g. onnx extra missing
            print(f"  {b}: not available ({exc})")
    with torch.inference_mode():
        ref_img = fns["nvlabs"](ws).float()
        diffs = {b: float((fns[b](ws).float() - ref_img).abs().max()) for b in fns if b != "nvlabs"}
        for fn in fns.values():                                        # warm-up
            fn(ws)
        times: dict[str, list[float]] = {b: [] for b in fns}
        for _ in range(repeats):                                       # interleaved: same machine state
            for b, fn in fns.items():
                times[b] += _time(fn, ws, 1)
    med = {b: statistics.median(t) * 1e3 for b, t in times.items()}
    return {"config": name, "resolution": int(G.img_resolution), "batch": batch,
            "ms_per_batch": med, "speedup_vs_nvlabs": {b: med["nvlabs"] / med[b] for b in med if b != "nvlabs"},
            "max_abs_diff_vs_nvlabs": diffs, "repeats": repeats}


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n")[0])
    p.add_argument("--nvlabs-repo", type=Path, required=True, help="a checkout of NVlabs/stylegan2-ada-pytorch")
    p.add_argument("--configs", nargs="+", default=["demo", "ffhq-shapes"], choices=("demo", "ffhq-shapes"))
    p.add_argument("--resolutions", type=int, nargs="+", default=[256], help="ffhq-shapes resolutions")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=("torch", "onnx"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    networks = load_reference(args.nvlabs_repo)
    rows = []
    for cfg in args.configs:
        if cfg == "demo":
            gens = [("demo", demo_generator())]
        else:
            gens = [(f"ffhq-shapes {r}", build_random_generator(ffhq_shape_config(r))) for r in args.resolutions]
        for name, G in gens:
            row = bench_config(name, G, networks, args.batch, args.repeats, args.backends, args.out_dir / "cache")
            rows.append(row)
            line = "  ".join(f"{b} {row['ms_per_batch'][b]:.1f} ms" for b in row["ms_per_batch"])
            speed = ", ".join(f"{b} {v:.2f}x" for b, v in row["speedup_vs_nvlabs"].items())
            diffs = ", ".join(f"{b} {v:.1e}" for b, v in row["max_abs_diff_vs_nvlabs"].items())
            print(f"{name:>18} batch {args.batch}: {line}  | speed-up vs NVlabs: {speed}  | max |diff| {diffs}",
                  flush=True)
    report = {"benchmark": "reference", "environment": environment(torch.device("cpu")),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "results": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "reference.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out_dir / 'reference.json'}")
    return report


if __name__ == "__main__":
    main()
