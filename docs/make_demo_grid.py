"""Write docs/demo_samples.png: the shipped demo generator next to the renderer, same codes.

    python docs/make_demo_grid.py [--generator demo] [--seeds 8] [--out docs/demo_samples.png]

Top row: ``render_face`` of each seed's code (the frozen motion fields at rest, as the generator
was last trained); middle row: the generator's image of the same z; bottom row: the identity as
the engine shows it (the seed at rest, truncation 0.7) with the mouth opened 2 x-units along the
learned ``mouth_open`` direction and, right half, blinking.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.cli_util import images_to_uint8  # noqa: E402
from engine.demo_world.latent import at_rest, render_z  # noqa: E402
from engine.latent.identity import w_from_seed  # noqa: E402
from engine.session import AvatarEngine  # noqa: E402
from engine.synthesis.networks import seed_to_z  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--generator", default="demo")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--frozen", default="yaw,pitch,roll,gaze_x,gaze_y")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo_samples.png")
    args = p.parse_args()
    engine = AvatarEngine(args.generator)
    G, ds = engine.G, engine.directions
    z = np.concatenate([seed_to_z(s, G.z_dim) for s in range(args.seeds)])
    zr = at_rest(z, [n for n in args.frozen.split(",") if n])
    rows = [render_z(zr, G.img_resolution)]
    with torch.no_grad():
        rows.append(images_to_uint8(G(torch.from_numpy(z).float(), noise_mode="const")))
        moved = []
        for s in range(args.seeds):
            ws = w_from_seed(G, s, truncation_psi=0.7)
            name = "mouth_open" if s < args.seeds // 2 else "blink"
            d = ds[name]
            moved.append(ws + torch.from_numpy(d.vector).float() * d.stdev * 2.0)
        rows.append(images_to_uint8(G.synthesis(torch.cat(moved), noise_mode="const")))
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    from PIL import Image
    Image.fromarray(grid).quantize(colors=200, method=Image.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
