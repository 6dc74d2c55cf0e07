"""Numerical parity of the fast synthesis settings against float32, on the same latents.

For each generator (the shipped demo, 128 px, and random-weight generators of the official NVlabs
FFHQ shapes, ``benchmarks.common.ffhq_shape_config``) one batch of ws is rendered by the torch
synthesis backend (``engine.synthesis.backends.TorchBackend``) in float32 with TF32 off (the
reference) and in each fast variant: float32 as torch runs it by default (cuDNN convolutions in
TF32 on CUDA), float32 + channels_last, float16, float16 + channels_last, float16 + channels_last
+ CUDA-graph replay, bfloat16 + channels_last. Per variant: max |diff|, mean |diff|, relative L2
error, PSNR (peak-to-peak 2, as the TensorRT build's check) and whether the output is finite; each
backend renders ws, then other ws, then ws again, so a stale graph input shows as
``repeat_max_abs`` > 0. A variant passes when finite, PSNR >= ``--min-psnr`` (30 dB) and relative
L2 error <= ``--max-rel``. float16 and CUDA graphs need CUDA; on a CPU those rows say so.
Exit status 1 when a variant that ran fails.

    python -m benchmarks.gpu_parity --device cuda --out parity.json        # demo + 256/512/1024
    python -m benchmarks.gpu_parity --device cpu --resolutions 32 --channel-max 32 --z-dim 32 \\
        --mapping-layers 2 --batch 2                                        # CPU smoke run
    python -m benchmarks.gpu_parity --write-checkpoint ffhq512.safetensors --resolution 512
        # a random-weight FFHQ-shape checkpoint (float16 on disk) for benchmarks.sessions
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import build_random_generator, environment, ffhq_shape_config

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "gpu_parity.json"

#: (name, TorchBackend keyword arguments, needs CUDA)
VARIANTS: tuple[tuple[str, dict[str, Any], bool], ...] = (
    ("float32_default", dict(dtype="float32", channels_last=False), True),
    ("float32_channels_last", dict(dtype="float32", channels_last=True), False),
    ("float16", dict(dtype="float16", channels_last=False), True),
    ("float16_channels_last", dict(dtype="float16", channels_last=True), True),
    ("float16_channels_last_cuda_graphs", dict(dtype="float16", channels_last=True, cuda_graphs=True), True),
    ("bfloat16_channels_last", dict(dtype="bfloat16", channels_last=True), False),
)


@contextlib.contextmanager
def strict_float32():
    """TF32 off for cuDNN convolutions and matmuls (the reference), restored afterwards."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def compare(out: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    d = out.double() - ref.double()
    mse = float((d ** 2).mean())
    ref_norm = float(ref.double().norm())
    return {
        "max_abs": float(d.abs().max()),
        "mean_abs": float(d.abs().mean()),
        "rel_l2": float(d.norm()) / ref_norm if ref_norm > 0 else (0.0 if mse == 0 else math.inf),
        "psnr_db": math.inf if mse == 0 else 10.0 * math.log10(4.0 / mse),
    }


def render3(backend, ws: torch.Tensor, ws_other: torch.Tensor) -> tuple[torch.Tensor, float]:
    """ws, other ws, ws again: (the last output as float32 on the CPU, max |first - last|)."""
    first = backend(ws).float().cpu()
    backend(ws_other)
    last = backend(ws).float().cpu()
    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)
    return last, float((first - last).abs().max())


def jsonable(x):
    """inf/nan → strings (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    return x


def check_generator(label: str, G, device: torch.device, batch: int, seed: int, min_psnr: float,
                    max_rel: float) -> dict[str, Any]:
    from engine.synthesis.backends import TorchBackend

    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(2 * batch, G.z_dim, generator=gen)
    with torch.inference_mode():
        ws_all = G.mapping(z, truncation_psi=1.0).float()          # float32 mapping, on the CPU
    ws, ws_other = ws_all[:batch].contiguous(), ws_all[batch:].contiguous()
    with strict_float32():
        ref_backend = TorchBackend(G, device=device, dtype="float32", channels_last=False)
        ref, ref_repeat = render3(ref_backend, ws, ws_other)
    del ref_backend
    row: dict[str, Any] = {"generator": label, "resolution": int(G.img_resolution), "batch": batch,
                           "num_ws": int(G.num_ws), "w_dim": int(G.w_dim),
                           "reference": {"dtype": "float32", "tf32": False, "finite": bool(torch.isfinite(ref).all()),
                                         "min": float(ref.min()), "max": float(ref.max()),
                                         "std": float(ref.std()), "repeat_max_abs": ref_repeat},
                           "variants": {}}
    outs: dict[str, torch.Tensor] = {}
    for name, kwargs, needs_cuda in VARIANTS:
        if needs_cuda and device.type != "cuda":
            row["variants"][name] = {"skipped": "needs CUDA"}
            continue
        try:
            backend = TorchBackend(G, device=device, **kwargs)
            out, repeat = render3(backend, ws, ws_other)
            del backend
        except Exception as exc:  # a variant that cannot run is a failed row with its reason
            row["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300], "ok": False}
            continue
        outs[name] = out
        v = {**kwargs, **compare(out, ref), "finite": bool(torch.isfinite(out).all()), "repeat_max_abs": repeat}
        v["ok"] = bool(v["finite"] and v["psnr_db"] >= min_psnr and v["rel_l2"] <= max_rel)
        row["variants"][name] = v
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "float16_channels_last_cuda_graphs" in outs and "float16_channels_last" in outs:
        row["cuda_graphs_vs_eager_max_abs"] = float(
            (outs["float16_channels_last_cuda_graphs"] - outs["float16_channels_last"]).abs().max())
    row["ok"] = row["reference"]["finite"] and all(v.get("ok", True) for v in row["variants"].values())
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_parity",
                                description="float16 / channels_last / CUDA-graph synthesis vs float32, as JSON.")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    p.add_argument("--generators", nargs="+", choices=["demo", "ffhq-shapes"], default=["demo", "ffhq-shapes"])
    p.add_argument("--resolutions", type=int, nargs="+", default=[256, 512, 1024], help="ffhq-shapes resolutions")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="latents and random weights")
    p.add_argument("--min-psnr", type=float, default=30.0, help="dB, peak-to-peak 2 (the TensorRT build's bar)")
    p.add_argument("--max-rel", type=float, default=0.1, help="largest relative L2 error that passes")
    p.add_argument("--channel-base", type=int, default=None, help="ffhq-shapes: override channel_base")
    p.add_argument("--channel-max", type=int, default=512)
    p.add_argument("--z-dim", type=int, default=512, help="ffhq-shapes: z_dim = w_dim")
    p.add_argument("--mapping-layers", type=int, default=8)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--write-checkpoint", type=Path, default=None, metavar="PATH",
                   help="instead: write a random-weight FFHQ-shape generator at --resolution (StyleCast "
                        "safetensors, float16) and exit")
    p.add_argument("--resolution", type=int, default=512, help="--write-checkpoint's resolution")
    args = p.parse_args(argv)
    if args.batch < 1:
        p.error("--batch must be >= 1")
    return args


def shape_config(args, resolution: int):
    return ffhq_shape_config(resolution, channel_base=args.channel_base, channel_max=args.channel_max,
                             z_dim=args.z_dim, mapping_layers=args.mapping_layers)


def write_checkpoint(args) -> int:
    from engine.synthesis.checkpoints import save_generator

    G = build_random_generator(shape_config(args, args.resolution), seed=args.seed)
    path = save_generator(G, args.write_checkpoint, dtype=torch.float16,
                          source=f"random weights, NVlabs FFHQ {args.resolution} px shape, seed {args.seed} "
                                 "(benchmarks.gpu_parity)")
    n = sum(p.numel() for p in G.parameters())
    print(json.dumps({"checkpoint": str(path), "resolution": args.resolution, "parameters": n}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.write_checkpoint is not None:
        return write_checkpoint(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    from engine.synthesis import load_generator

    makers = []
    if "demo" in args.generators:
        makers.append(("demo", lambda: load_generator("demo")))
    if "ffhq-shapes" in args.generators:
        makers += [(f"ffhq-shape-{r}", lambda r=r: build_random_generator(shape_config(args, r), seed=args.seed))
                   for r in args.resolutions]
    env = environment(device)
    print(f"# parity on {env['device_name']} ({device.type}), torch {env['torch_version']}, "
          f"CUDA {env['cuda_version']}", flush=True)
    rows = []
    for label, make in makers:
        row = check_generator(label, make(), device, args.batch, args.seed, args.min_psnr, args.max_rel)
        rows.append(row)
        for name, v in row["variants"].items():
            if "skipped" in v or "error" in v:
                print(f"{label:>16} {name:<34} {v.get('skipped') or v.get('error')}", flush=True)
            else:
                print(f"{label:>16} {name:<34} max|d| {v['max_abs']:.3g}  rel {v['rel_l2']:.3g}  "
                      f"PSNR {v['psnr_db']:.1f} dB  repeat {v['repeat_max_abs']:.3g}  "
                      f"{'ok' if v['ok'] else 'FAIL'}", flush=True)
        if "cuda_graphs_vs_eager_max_abs" in row:
            print(f"{label:>16} cuda graphs vs eager float16: max|d| {row['cuda_graphs_vs_eager_max_abs']:.3g}")
    report = {"benchmark": "gpu_parity", "environment": env,
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "device": device.type, "results": rows, "ok": all(r["ok"] for r in rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(report), indent=2) + "\n", encoding="utf-8")
    print(f"{'all variants pass' if report['ok'] else 'SOME VARIANTS FAIL'}; wrote {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
