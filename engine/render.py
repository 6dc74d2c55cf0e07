"""Render a talking-avatar video from an audio file: ``python -m engine.render --audio speech.wav --out talk.mp4``.

The audio is decoded with PyAV (anything FFmpeg reads: wav, flac, mp3, ogg, m4a, ...), converted
once to 48 kHz mono int16, and fed to an :class:`engine.session.AvatarSession` in 20 ms chunks,
exactly as a live stream would be. Every frame the session returns is encoded to H.264
(libx264, yuv420p, ``--crf``) and its ``Frame.audio`` (the 48 kHz samples that drove it) to AAC,
both muxed into one MP4 with PyAV. Video frame k has pts k/fps and the audio starts at 0, so the
file is in sync by construction (the session's audio/video offset is 0). The video has
ceil(duration · fps) frames; the audio track is the input, at its own length.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from tqdm import tqdm

from engine.cli_util import (
    THREADS_HELP,
    ArgumentParser,
    UsageError,
    add_expect_sha256,
    fail,
    finite_float,
    parse_identity,
    resolve_device,
    thread_count,
)
from engine.runtime import set_threads, tune_cpu_allocator
from engine.sinks import Mp4Sink

PROG = "python -m engine.render"
AUDIO_RATE = 48000
CHUNK = AUDIO_RATE // 50            # 20 ms, what a live stream pushes
EPILOG = """examples:
  # the demo face (128 px, no download) talking along to a wav file
  python -m engine.render --audio speech.wav --out talk.mp4

  # a real generator, face of seed 42, 512 px output, a trained motion model
  python -m engine.render --audio speech.mp3 --out talk.mp4 --generator ffhq512 --identity 42 \\
      --driver lstm:motion.safetensors --directions directions.json --device cuda

  # a projected photo as the face, 30 fps, smaller file
  python -m engine.render --audio speech.flac --out talk.mp4 --identity me.npy --fps 30 --crf 23
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", type=Path, required=True, help="input audio file (wav, flac, mp3, ... anything FFmpeg reads)")
    p.add_argument("--out", type=Path, required=True, help="output .mp4 (H.264 + AAC)")
    p.add_argument("--identity", default="0", help="face: a seed (default 0), a .npy with w / ws, or an identity .npz "
                                                 "from python -m engine.invert")
    p.add_argument("--driver", default="default",
                   help="motion: default (the demo generator's trained audio LSTM; idle for other generators), "
                        "idle (analytic), lstm:PATH.safetensors, trajectory:PATH.npy")
    p.add_argument("--generator", default="demo",
                   help="demo (default: the shipped demo generator), random (untrained), a preset "
                        "(ffhq256/512/1024) or a checkpoint path")
    add_expect_sha256(p)
    p.add_argument("--directions", type=Path, default=None,
                   help="direction-set JSON (python -m engine.basis name); default: the demo generator's shipped "
                        "directions, a placeholder PCA set for other generators")
    p.add_argument("--fps", type=finite_float, default=25.0, help="video frames per second (default 25)")
    p.add_argument("--resolution", type=int, default=None, help="output size in pixels (default: the generator's)")
    p.add_argument("--truncation", type=finite_float, default=0.7, help="truncation psi for seed faces (default 0.7)")
    p.add_argument("--seed", type=int, default=0, help="seed of the motion (blinks, sway; default 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or a GPU index (default cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="synthesis dtype (default float32)")
    p.add_argument("--crf", type=int, default=18, help="x264 constant rate factor, 0-51 (default 18)")
    p.add_argument("--preset", default="medium",
                   choices=("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"),
                   help="x264 preset (default medium)")
    p.add_argument("--threads", type=thread_count, default=None, help=THREADS_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# -- audio in ------------------------------------------------------------------------------------

class AudioFile:
    """An audio file opened with PyAV; iterates 48 kHz mono int16 chunks. Errors → UsageError."""

    def __init__(self, path: Path):
        import av

        self.path = path
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            self.container = av.open(str(path), "r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise UsageError(f"{path}: not a readable audio file ({_first_line(exc)})") from None
        if not self.container.streams.audio:
            self.container.close()
            raise UsageError(f"{path}: has no audio stream")
        self.stream = self.container.streams.audio[0]
        self.duration_s: Optional[float] = None          # estimate, for the progress bar
        if self.stream.duration is not None and self.stream.time_base is not None:
            self.duration_s = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration is not None:
            self.duration_s = self.container.duration / 1e6

    def chunks(self) -> Iterator[np.ndarray]:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        try:
            for frame in self.container.decode(self.stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except (av.FFmpegError, ValueError) as exc:
            raise UsageError(f"{self.path}: cannot decode the audio ({_first_line(exc)})") from None

    def close(self) -> None:
        self.container.close()


def _first_line(exc: BaseException) -> str:
    """The message of an exception on one line (FFmpeg errors: their text without errno/file name)."""
    text = getattr(exc, "strerror", None) if hasattr(exc, "errno") else None
    return " ".join(str(text or exc).split()) or type(exc).__name__


# -- main ----------------------------------------------------------------------------------------

def render(args: argparse.Namespace) -> dict:
    """Run the render described by parsed ``args``; returns the numbers it prints."""
    from engine.session import AvatarEngine, AvatarSession
    from engine.synthesis.checkpoints import CheckpointError

    if not (0 < args.fps <= 240):
        raise UsageError(f"--fps must be in (0, 240], got {args.fps:g}")
    if not 0 <= args.crf <= 51:
        raise UsageError(f"--crf must be in 0..51, got {args.crf}")
    if args.resolution is not None and (args.resolution < 16 or args.resolution % 2):
        raise UsageError(f"--resolution must be an even number of pixels >= 16 (yuv420p), got {args.resolution}")
    if args.out.suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise UsageError(f"--out {args.out}: use an .mp4 file name")
    if args.out.resolve() == args.audio.resolve():
        raise UsageError("--out would overwrite the input audio")
    identity = parse_identity(args.identity)
    device = resolve_device(args.device)
    set_threads(args.threads, device)
    if device.type == "cpu":
        tune_cpu_allocator()
    audio = AudioFile(args.audio)
    try:
        engine = AvatarEngine(args.generator, expect_sha256=args.expect_sha256, device=device, dtype=args.dtype, resolution=args.resolution,
                              truncation_psi=args.truncation, directions=args.directions,
                              log=lambda msg: print(f"{PROG}: {msg}", file=sys.stderr, flush=True))
        if engine.resolution % 2:
            raise UsageError(f"output size {engine.resolution} px is odd; pass an even --resolution (yuv420p)")
        session = AvatarSession(engine, fps=args.fps, identity=identity, driver=args.driver, seed=args.seed,
                                audio_out=True, audio_out_rate=AUDIO_RATE)
    except (UsageError, CheckpointError, ValueError, FileNotFoundError) as exc:
        audio.close()
        raise UsageError(_first_line(exc)) from None

    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_name(args.out.name + ".part")
    writer = Mp4Sink(part, size=engine.resolution, fps=args.fps, crf=args.crf, preset=args.preset,
                     audio_rate=AUDIO_RATE)
    est = math.ceil(audio.duration_s * args.fps) if audio.duration_s else None
    bar = tqdm(total=est, desc="render", unit="frame", disable=args.quiet, leave=False)
    n_in = 0                       # input samples at 48 kHz
    n_audio_out = 0                # audio samples written (capped at n_in: the input's length)
    t0 = time.perf_counter()
    synth_ms = []

    def emit(frame) -> None:
        nonlocal n_audio_out
        keep = max(0, min(frame.audio.size, n_in - n_audio_out))    # the audio track: the input's length
        writer.write(replace(frame, audio=frame.audio[:keep]))
        n_audio_out += keep
        synth_ms.append(frame.timings["synthesis"])
        bar.update(1)

    ok = False
    try:
        buf = np.zeros(0, dtype=np.int16)
        for pcm in audio.chunks():
            buf = np.concatenate([buf, pcm]) if buf.size else pcm
            while buf.size >= CHUNK:
                session.push_audio(buf[:CHUNK], AUDIO_RATE)
                n_in += CHUNK
                buf = buf[CHUNK:]
                while (frame := session.next_frame()) is not None:
                    emit(frame)
        if buf.size:
            session.push_audio(buf, AUDIO_RATE)
            n_in += buf.size
        if n_in == 0:
            raise UsageError(f"{args.audio}: holds no audio samples")
        n_frames = math.ceil(n_in * args.fps / AUDIO_RATE - 1e-9)
        while writer.frames < n_frames:
            emit(session.next_frame(fill_silence=True))
        writer.close()
        ok = True
    finally:
        bar.close()
        audio.close()
        session.close()
        if not ok:
            writer.abort()
            part.unlink(missing_ok=True)
    os.replace(part, args.out)
    wall = time.perf_counter() - t0
    duration = n_in / AUDIO_RATE
    return {"frames": writer.frames, "duration_s": duration, "wall_s": wall, "fps": writer.frames / wall,
            "realtime_factor": duration / wall, "size": engine.resolution,
            "synthesis_ms_p50": float(np.median(synth_ms)) if synth_ms else 0.0}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        r = render(args)
    except UsageError as exc:
        fail(PROG, str(exc))
    except OSError as exc:
        fail(PROG, f"{exc.filename or args.out}: {exc.strerror or exc}")
    print(f"wrote {args.out}: {r['frames']} frames {r['size']}x{r['size']} @ {args.fps:g} fps, "
          f"{r['duration_s']:.2f} s audio in {r['wall_s']:.2f} s: {r['fps']:.1f} frames/s, "
          f"realtime factor {r['realtime_factor']:.2f}x (synthesis p50 {r['synthesis_ms_p50']:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
