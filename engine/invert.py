"""Invert a photo into a generator: ``python -m engine.invert PHOTO --generator G --out me.npz``.

The photo is decoded (EXIF rotation honoured, huge ones downscaled), its largest face found and
FFHQ-aligned at the generator's resolution (framed as the generator frames faces), projected into
W and refined in W+ (:mod:`engine.inversion.project`), and written as an identity ``.npz``
(:mod:`engine.inversion.identity_file`) that ``engine.render --identity``, ``engine.serve
--identity`` and ``AvatarSession(identity=...)`` take. Errors are one line, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from engine.cli_util import ArgumentParser, UsageError, add_expect_sha256, fail, resolve_device

PROG = "python -m engine.invert"
EPILOG = """examples:
  # a photo into the built-in demo generator, W then W+ (a minute or two on a CPU)
  python -m engine.invert me.jpg --out me.npz

  # an NVlabs FFHQ checkpoint on the first GPU, more steps, and a video of the optimisation
  python -m engine.invert me.jpg --generator ffhq.pkl --device 0 --steps 500 --out me.npz --save-video me.mp4

  # then talk with it
  python -m engine.render --audio speech.wav --identity me.npz --out talk.mp4
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photo", type=Path, help="the photo (any format Pillow reads)")
    p.add_argument("--generator", default="demo", help="checkpoint path or preset name (default demo)")
    add_expect_sha256(p)
    p.add_argument("--out", type=Path, required=True, help="the identity file to write (.npz)")
    p.add_argument("--steps", type=int, default=300, help="W steps (default 300)")
    p.add_argument("--wplus-steps", type=int, default=200, help="W+ steps after them (default 200; --space w: none)")
    p.add_argument("--space", choices=("w", "w+"), default="w+", help="latent space of the result (default w+)")
    p.add_argument("--no-noise", action="store_true", help="keep the generator's noise maps (do not project them)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or N")
    p.add_argument("--seed", type=int, default=0, help="seed of the start samples and the noise (default 0)")
    p.add_argument("--save-video", type=Path, default=None, help="an .mp4 of the optimisation (target | current)")
    p.add_argument("--tune", action="store_true",
                   help="then tune the synthesis weights around the result (PTI), keeping the motion directions "
                        "working; writes OUT's stem + .tuned.safetensors beside it")
    p.add_argument("--tune-steps", type=int, default=150, help="tuning steps (default 150)")
    p.add_argument("--directions", type=Path, default=None,
                   help="the direction set tuning keeps working (default: the one the engine uses for this generator)")
    p.add_argument("--no-disc", action="store_true",
                   help="leave out the discriminator-feature loss (used when the checkpoint is an NVlabs pickle "
                        "with a discriminator)")
    p.add_argument("--aligned", action="store_true",
                   help="the photo is already aligned for this generator (square, any size): no face search")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.out.suffix.lower() != ".npz":
            raise UsageError("--out must be a .npz file")
        if not args.out.parent.is_dir():
            raise UsageError(f"--out: folder {args.out.parent} does not exist")
        if args.steps < 1 or args.wplus_steps < 0:
            raise UsageError("--steps must be at least 1 and --wplus-steps at least 0")
        if args.tune_steps < 1:
            raise UsageError("--tune-steps must be at least 1")
        if args.directions is not None and not args.tune:
            raise UsageError("--directions is used by --tune only")
        device = resolve_device(args.device)
    except UsageError as exc:
        fail(PROG, str(exc))
    say = lambda msg: print(f"{PROG}: {msg}", file=sys.stderr, flush=True)  # noqa: E731

    import torch

    from engine.faces.photo import PhotoError, load_photo
    from engine.inversion.run import InversionError, invert_photo
    from engine.inversion.project import Settings
    from engine.synthesis import load_generator
    from engine.synthesis.checkpoints import CheckpointError

    torch.manual_seed(args.seed)
    try:
        G = load_generator(args.generator, device=device, expect_sha256=args.expect_sha256)
    except (CheckpointError, OSError, ValueError) as exc:
        fail(PROG, f"could not load the generator: {exc}")
    settings = Settings(steps=args.steps, wplus_steps=args.wplus_steps if args.space == "w+" else 0,
                        space=args.space, optimize_noise=not args.no_noise, seed=args.seed)
    t0 = time.perf_counter()
    try:
        photo = load_photo(args.photo, log=say)
        tune, directions = None, None
        if args.tune:
            from engine.inversion.tune import TuneSettings

            tune, directions = TuneSettings(steps=args.tune_steps, seed=args.seed), motion_directions(G, args.directions, say)
        D = None if args.no_disc else discriminator_for(args.generator, device, say)
        ident, frames = invert_photo(G, photo, name=str(args.generator), settings=settings, aligned=args.aligned,
                                     tune=tune, directions=directions, D=D,
                                     progress=not args.quiet, video=args.save_video is not None, log=say)
    except (PhotoError, InversionError, ValueError, OSError) as exc:
        fail(PROG, str(exc))
    from engine.inversion.identity_file import write_identity

    write_identity(args.out, ident)
    if args.save_video is not None and frames:
        _write_video(args.save_video, frames, say)
    report = ident.meta["report"]
    keys = ("psnr_db", "ssim", "identity_distance", "final", "untuned")
    summary = {k: report[k] for k in keys if k in report}
    if "tuning" in report:
        summary["tuned"] = ident.meta["tuned"]["file"]
        summary["tuning"] = {k: report["tuning"][k] for k in ("motion_cosine_min", "others_psnr_db", "directions")}
    print(json.dumps({"out": str(args.out), "seconds": round(time.perf_counter() - t0, 1), **summary}))
    return 0


def discriminator_for(source: str, device, say):
    """The checkpoint's discriminator for the feature loss, or None; says which, in one line."""
    from engine.synthesis.checkpoints import FORMAT_NVLABS, detect_format
    from engine.synthesis.formats.nvlabs_discriminator import read_discriminator

    path = Path(source)
    if not path.is_file():
        say(f"no discriminator-feature loss: {source!r} is a preset without a discriminator")
        return None
    if detect_format(path) != FORMAT_NVLABS:
        say("no discriminator-feature loss: only NVlabs pickles carry a discriminator")
        return None
    D, why = read_discriminator(path)
    if D is None:
        say(f"no discriminator-feature loss: {why}")
        return None
    say(f"discriminator-feature loss: the checkpoint's D ({D.img_resolution} px)")
    return D.to(device)


def motion_directions(G, path: Optional[Path], say):
    """The direction set tuning keeps working: ``path``, else what the engine would use for ``G``
    (the shipped set for the demo generator, a set discovered earlier, or the placeholder)."""
    from engine.avatar import DEMO_DIRECTIONS, default_directions, is_demo_checkpoint
    from engine.latent.defaults import resolve_directions
    from engine.latent.direction_set import DirectionSet
    from engine.synthesis.fingerprint import generator_hash

    checkpoint = generator_hash(G)
    if path is None and is_demo_checkpoint(checkpoint):
        path = DEMO_DIRECTIONS
    if path is not None:
        return DirectionSet.load(path, num_ws=int(G.num_ws), w_dim=int(G.w_dim), checkpoint_hash=checkpoint)
    return resolve_directions(G, default_directions, checkpoint_hash=checkpoint, log=say, discover_now=False)[0]


def _write_video(path: Path, frames: list[np.ndarray], say) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w + (w % 2), h + (h % 2), "yuv420p"
        for img in frames:
            if img.shape[0] % 2 or img.shape[1] % 2:
                img = np.pad(img, ((0, img.shape[0] % 2), (0, img.shape[1] % 2), (0, 0)), mode="edge")
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    say(f"wrote {path} ({len(frames)} frames)")


if __name__ == "__main__":
    sys.exit(main())
