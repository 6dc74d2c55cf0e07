"""Write docs/demo_samples.png: the shipped demo generator next to the renderer, same codes.

    python docs/make_demo_grid.py [--generator demo] [--seeds 8] [--out docs/demo_samples.png]

Top row: ``render_face`` of each seed's code (``--frozen`` motion fields at rest: none for the
shipped v2 generator, which learned them all); middle row: the generator's image of the same z;
bottom row: the identity as the engine shows it (the seed at rest, truncation 0.7) moved along one
learned direction each (MOVES: mouth open, blink, head turned both ways, nod, tilt, gaze right and
down; directions the generator lacks are skipped).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.frames import images_to_uint8  # noqa: E402
from engine.demo_world.latent import at_rest, render_z  # noqa: E402
from engine.latent.identity import w_from_seed  # noqa: E402
from engine.session import AvatarEngine  # noqa: E402
from engine.synthesis.networks import seed_to_z  # noqa: E402


#: (direction, x units) of the bottom row, one per seed
MOVES = (("mouth_open", 2.0), ("blink", 2.0), ("head_yaw", 1.5), ("head_yaw", -1.5), ("head_pitch", -1.5),
         ("head_roll", 1.5), ("gaze_x", 1.5), ("gaze_y", 1.5))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--generator", default="demo")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--frozen", default="")
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
        moves = [m for m in MOVES if m[0] in ds]
        for s in range(args.seeds):
            ws = w_from_seed(G, s, truncation_psi=0.7)
            name, units = moves[s % len(moves)]
            d = ds[name]
            moved.append(ws + torch.from_numpy(d.vector).float() * d.stdev * units)
        rows.append(images_to_uint8(G.synthesis(torch.cat(moved), noise_mode="const")))
    grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
    from PIL import Image
    Image.fromarray(grid).quantize(colors=200, method=Image.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
