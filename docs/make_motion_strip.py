"""Write docs/motion_strip.png: the demo face speaking a held-out utterance, with and without the
idle driver's speech priors, one frame every ``--every`` seconds.

    python -m engine.demo_world.talking --out talking --n 400
    python docs/make_motion_strip.py --data talking/holdout [--utterance 0] [--seed 3] [--out docs/motion_strip.png]

Top row: the default driver (the audio LSTM's mouth over the idle driver with its priors: nods,
turns with the phrase, gaze shifts, blinks at phrase ends); bottom row: the same with the priors
off (slow sinusoidal sway only). Same identity, same audio, same seed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.lipsync import read_utterances  # noqa: E402
from engine.motion import IdleDriver, LayeredDriver  # noqa: E402
from engine.drivers import make_driver  # noqa: E402
from engine.session import AvatarEngine, AvatarSession  # noqa: E402


def frames(engine, audio: np.ndarray, rate: int, seed: int, priors: bool, tail_s: float) -> list[np.ndarray]:
    drv = make_driver("default", engine, fps=25.0, seed=seed)
    idle = IdleDriver(engine.directions, fps=25.0, seed=seed, priors=priors)
    drv = LayeredDriver(drv.top, idle) if isinstance(drv, LayeredDriver) else idle
    session = AvatarSession(engine, fps=25.0, identity=seed, driver=drv)
    pcm = np.concatenate([audio, np.zeros(int(tail_s * rate), audio.dtype)])
    out = []
    step = rate // 50
    for i in range(0, len(pcm), step):
        session.push_audio(pcm[i:i + step], rate)
        while (f := session.next_frame()) is not None:
            out.append(f.image)
    session.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True, help="held-out talking data (engine.demo_world.talking)")
    p.add_argument("--utterance", type=int, default=0, help="first utterance index (two are spoken)")
    p.add_argument("--seed", type=int, default=3, help="identity seed and driver seed")
    p.add_argument("--every", type=float, default=0.4, help="seconds between the frames shown")
    p.add_argument("--count", type=int, default=12, help="frames per row")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "motion_strip.png")
    args = p.parse_args()
    utts = read_utterances(args.data)
    a, b = utts[args.utterance], utts[(args.utterance + 1) % len(utts)]
    gap = np.zeros(int(0.8 * a["rate"]), np.int16)
    audio = np.concatenate([a["samples"], gap, b["samples"]])
    engine = AvatarEngine("demo")
    rows = []
    for priors in (True, False):
        imgs = frames(engine, audio, a["rate"], args.seed, priors, tail_s=1.0)
        pick = [int(round(k * args.every * 25)) for k in range(args.count)]
        rows.append(np.concatenate([imgs[min(i, len(imgs) - 1)] for i in pick], axis=1))
    engine.close()
    from PIL import Image
    Image.fromarray(np.concatenate(rows, axis=0)).quantize(colors=200, method=Image.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
