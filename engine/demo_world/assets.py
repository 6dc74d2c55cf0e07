"""Talking data → latent trajectories of the demo generator: the motion model's training pairs.

    python -m engine.demo_world.assets targets --talking TALK_DIR --out PAIRS_DIR \\
        [--generator demo --directions engine/assets/demo_directions.json]

Works on a generator trained with ``engine.train_demo --objective recon``: its z is the demo
world's code (:mod:`engine.demo_world.latent`) and its run folder holds the motion directions it
learned (``demo_directions.json``, one W direction per motion role, rendered linearly by
construction; the shipped demo generator's are ``engine/assets/demo_directions.json``).

Each utterance of a talking data set (``engine.demo_world.talking``) becomes a latent trajectory
of one identity: the identity as the engine shows it (its seed's code at rest, truncated with
``--truncation``) is the anchor, and its mouth follows the utterance's ground-truth mouth
track through the named ``mouth_open`` direction,
``w_t = anchor + v·stdev·(m_t − rest) / scale`` (``MOTION_SCALE``). Written as ``NAME.wav``
(copied), ``NAME.npy`` (w_t [T, w_dim] float32) and ``NAME.json`` ({"fps", "anchor", "seed"}),
the form ``python -m engine.train_motion --directions DIRS --names mouth_open`` trains on.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from engine.cli_util import ArgumentParser, UsageError, fail, finite_float
from engine.latent.identity import w_from_seed

from .latent import Z_DIM, motion_x

__all__ = ["mouth_x", "utterance_trajectory", "write_targets", "build_parser", "main"]

PROG = "python -m engine.demo_world.assets"


def _check_code_generator(G) -> None:
    if G.z_dim != Z_DIM or getattr(G.config, "normalize_z", True) or not getattr(G.config, "z_rest", None):
        raise UsageError(f"this generator's z is not the demo world's code (z_dim {G.z_dim}, want {Z_DIM}, "
                         "unnormalised, with z_rest): train it with python -m engine.train_demo --objective recon")


def mouth_x(mouth: np.ndarray) -> np.ndarray:
    """x on the demo generator's ``mouth_open`` direction for mouth openings (0..1)."""
    return motion_x(np.asarray(mouth, np.float64)[..., None], ("mouth_open",))[..., 0]


@torch.no_grad()
def utterance_trajectory(G, directions, seed: int, mouth: np.ndarray,
                         truncation_psi: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """(w_t [T, w_dim], anchor [w_dim]) float32 of identity ``seed`` speaking with ``mouth`` [T]."""
    _check_code_generator(G)
    if "mouth_open" not in directions:
        raise UsageError("the direction set has no mouth_open direction")
    d = directions["mouth_open"]
    anchor = w_from_seed(G, int(seed), truncation_psi=float(truncation_psi))[0, 0].double().cpu().numpy()
    x = mouth_x(np.asarray(mouth, np.float64).reshape(-1))
    w_t = anchor[None] + x[:, None] * (d.stdev * d.vector.astype(np.float64))[None]
    return w_t.astype(np.float32), anchor.astype(np.float32)


def write_targets(talking: Path, G, directions, out: Path, *, truncation_psi: float = 0.7, first_seed: int = 1000,
                  progress: bool = False) -> int:
    """One (wav, w_t, json) triple per utterance of ``talking`` (and of ``talking/holdout`` into
    ``out/holdout``); utterance i of a folder speaks with identity ``first_seed + i``. Returns the count."""
    talking, out = Path(talking), Path(out)
    folders = [(talking, out)] + ([(talking / "holdout", out / "holdout")] if (talking / "holdout").is_dir() else [])
    count = 0
    for src, dst in folders:
        tracks = sorted(src.glob("*.mouth.npy"))
        if src == talking and not tracks:
            raise UsageError(f"{talking}: no NAME.mouth.npy tracks (make them with python -m engine.demo_world.talking)")
        dst.mkdir(parents=True, exist_ok=True)
        it = tracks
        if progress:
            it = tqdm(tracks, desc=f"targets {dst.name}", unit="utt", dynamic_ncols=True, leave=False)
        for i, track in enumerate(it):
            name = track.name[: -len(".mouth.npy")]
            wav, meta_path = src / f"{name}.wav", src / f"{name}.json"
            if not wav.is_file():
                raise UsageError(f"{track}: no {wav.name} beside it")
            fps = float(json.loads(meta_path.read_text()).get("fps", 25.0)) if meta_path.is_file() else 25.0
            mouth = np.load(track, allow_pickle=False)
            seed = first_seed + i
            w_t, anchor = utterance_trajectory(G, directions, seed, mouth, truncation_psi)
            shutil.copyfile(wav, dst / f"{name}.wav")
            np.save(dst / f"{name}.npy", w_t)
            (dst / f"{name}.json").write_text(json.dumps({"fps": fps, "anchor": anchor.tolist(), "seed": seed,
                                                          "truncation_psi": truncation_psi}))
            count += 1
    return count


TARGETS_EPILOG = """examples:
  # the shipped demo generator and its directions
  python -m engine.demo_world.assets targets --talking talking --out pairs
  # a generator trained with engine.train_demo --objective recon (its demo_directions.json beside it)
  python -m engine.demo_world.assets targets --talking talking --generator runs/demo/demo_generator.safetensors \\
      --out pairs --truncation 0.7
"""


def build_parser() -> ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=TARGETS_EPILOG, formatter_class=fmt)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=ArgumentParser)
    t = sub.add_parser("targets", help="latent trajectories of a talking data set", formatter_class=fmt,
                       description="One (NAME.wav, NAME.npy w_t [T, w_dim], NAME.json) triple per utterance of a "
                                   "talking data set:\nidentity first_seed + i speaking with the utterance's "
                                   "mouth track on the mouth_open direction.",
                       epilog=TARGETS_EPILOG)
    t.add_argument("--talking", type=Path, required=True, help="folder written by python -m engine.demo_world.talking")
    t.add_argument("--generator", default="demo", help="demo (default) or a recon-trained generator's .safetensors")
    t.add_argument("--directions", type=Path, default=None,
                   help="its direction set (default: the shipped one for demo, else demo_directions.json beside "
                        "the generator)")
    t.add_argument("--out", type=Path, required=True, help="output folder of the training pairs (created if missing)")
    t.add_argument("--truncation", type=finite_float, default=0.7,
                   help="truncation psi of the identities (default 0.7, the engine's)")
    t.add_argument("--truncation-psi", dest="truncation", type=finite_float, default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.avatar import DEMO_DIRECTIONS
    from engine.latent.direction_set import DirectionSet
    from engine.latent.latent_basis import generator_hash
    from engine.synthesis.checkpoints import CheckpointError, load_generator
    try:
        G = load_generator(args.generator)
        _check_code_generator(G)
        path = args.directions
        if path is None:
            path = DEMO_DIRECTIONS if args.generator == "demo" else Path(args.generator).with_name("demo_directions.json")
        ds = DirectionSet.load(path, num_ws=G.num_ws, w_dim=G.w_dim, checkpoint_hash=generator_hash(G))
        n = write_targets(args.talking, G, ds, args.out, truncation_psi=args.truncation,
                          progress=not args.no_progress)
        print(f"wrote {n} (wav, w_t, json) triples to {args.out}")
    except (UsageError, CheckpointError, ValueError, OSError) as exc:
        fail(PROG, str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
