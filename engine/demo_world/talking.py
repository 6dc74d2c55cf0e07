"""Talking data: espeak-ng sentences with ground-truth mouth-opening tracks.

``python -m engine.demo_world.talking --out DIR --n 400`` writes, per utterance, ``NAME.wav``
(int16 mono, espeak-ng's 22.05 kHz) and ``NAME.mouth.npy`` (the mouth opening per video frame at
``--fps``, from espeak-ng's own phoneme timing, :func:`engine.demo_world.speech.mouth_track`) and
``NAME.json`` (text, voice, rate, pitch, fps, the phoneme timeline), plus ``DIR/meta.json``.

Sentences are made from a fixed vocabulary and templates, seeded, so the data set is the same on
every machine; voices (timbre variants of several English accents), speaking rates and pitches
vary per utterance. ``--holdout-voice`` keeps one voice out of the training split: utterances in
that voice are written under ``DIR/holdout/`` for the lip-sync evaluation on an unseen voice.
Utterance i depends only on (seed, i); existing complete utterances are kept on a re-run.

The mouth tracks become the motion model's targets once the demo generator's mouth direction
is named (x_t = gain · track on that direction, or the latents of rendered frames); see the
demo-world issue.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import wave
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm import tqdm

from engine.cli_util import ArgumentParser, UsageError, fail

from . import speech

__all__ = ["make_sentence", "utterance_spec", "write_utterance", "write_dataset", "FORMAT_VERSION", "build_parser",
           "main"]

PROG = "python -m engine.demo_world.talking"
FORMAT_VERSION = 1

_SUBJECTS = ["the old man", "my sister", "a small dog", "the teacher", "our neighbour", "the pilot", "a tired baker",
             "the children", "my friend Bob", "the quiet girl", "a busy farmer", "the doctor", "her brother",
             "the red bird", "a young poet", "the happy couple", "Mary", "Peter", "the boss", "the band"]
_VERBS = ["bought", "painted", "carried", "opened", "found", "watched", "baked", "moved", "pulled", "fixed",
          "wanted", "played", "cleaned", "dropped", "wrote", "sold", "borrowed", "hid", "lifted", "mapped"]
_OBJECTS = ["a big map", "the blue boat", "two apples", "a paper moon", "the old piano", "five yellow boxes",
            "a bag of beans", "the broken window", "some warm bread", "a very long letter", "the purple umbrella",
            "my father's watch", "a bowl of soup", "the heavy book", "an orange balloon", "the back door",
            "a pair of boots", "the morning paper", "a basket of peaches", "the bright lamp"]
_PLACES = ["at the market", "in the garden", "by the river", "on Monday morning", "after the party",
           "before lunch", "near the bridge", "in the kitchen", "under the stars", "at the bus stop",
           "behind the barn", "in a hurry", "with great care", "without a word", "at midnight"]
_OPENERS = ["", "", "", "Well, ", "Oh, ", "Yesterday ", "Maybe ", "Believe me, ", "Every week ", "Of course "]
_QUESTIONS = ["Why did {s} {v} {o}?", "Did {s} really want {o}?", "Where is {o} now?", "Who {v} {o} {p}?"]
_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029")
_VARIANTS = ("", "+m3", "+f2", "+f4", "+m7")


def make_sentence(rng: np.random.Generator) -> str:
    """One English sentence from the fixed vocabulary (statement, question, or two clauses)."""
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    s, v, o, p = pick(_SUBJECTS), pick(_VERBS), pick(_OBJECTS), pick(_PLACES)
    kind = rng.random()
    if kind < 0.2:
        text = pick(_QUESTIONS).format(s=s, v=v, o=o, p=p)
    elif kind < 0.45:
        text = f"{pick(_OPENERS)}{s} {v} {o} {p}, and then {pick(_SUBJECTS)} {pick(_VERBS)} {pick(_OBJECTS)}."
    else:
        text = f"{pick(_OPENERS)}{s} {v} {o} {p}."
    return text[0].upper() + text[1:]


def utterance_spec(seed: int, index: int) -> dict:
    """Text, voice, rate and pitch of utterance ``index`` (depends only on ``seed`` and ``index``)."""
    rng = np.random.default_rng([int(seed), int(index), 7])
    n = 1 + int(rng.random() < 0.35)
    text = " ".join(make_sentence(rng) for _ in range(n))
    voice = _VOICES[int(rng.integers(len(_VOICES)))] + _VARIANTS[int(rng.integers(len(_VARIANTS)))]
    return {"text": text, "voice": voice, "rate_wpm": int(rng.integers(130, 231)), "pitch": int(rng.integers(30, 71))}


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with wave.open(os.fspath(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    os.replace(tmp, path)


def write_utterance(out_dir: Path, name: str, spec: dict, fps: float) -> dict:
    """Synthesize one utterance and write NAME.wav, NAME.mouth.npy, NAME.json (the JSON last, so
    its presence marks a complete utterance). Returns the JSON record."""
    utt = speech.synthesize(spec["text"], voice=spec["voice"], rate_wpm=spec["rate_wpm"], pitch=spec["pitch"])
    track = speech.mouth_track(utt, fps)
    _write_wav(out_dir / f"{name}.wav", utt.samples, utt.sample_rate)
    tmp = out_dir / f"{name}.mouth.tmp.npy"
    np.save(tmp, track)
    os.replace(tmp, out_dir / f"{name}.mouth.npy")
    record = {**spec, "fps": float(fps), "sample_rate": utt.sample_rate, "frames": int(track.size),
              "duration_s": utt.duration_s,
              "phonemes": [[p.name, p.start, p.end] for p in utt.phonemes]}
    tmp = out_dir / f"{name}.json.tmp"
    tmp.write_text(json.dumps(record))
    os.replace(tmp, out_dir / f"{name}.json")
    return record


def write_dataset(out: Path, n: int, *, seed: int = 0, fps: float = 25.0, holdout_voice: Optional[str] = "en-029",
                  progress: bool = True) -> dict:
    """Write ``n`` utterances into ``out`` (held-out voice under ``out/holdout``); returns meta."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    meta = {"format_version": FORMAT_VERSION, "seed": int(seed), "fps": float(fps), "holdout_voice": holdout_voice}
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        for k in ("format_version", "seed", "fps", "holdout_voice"):
            if old.get(k) != meta[k]:
                raise ValueError(f"{meta_path}: made with {k}={old.get(k)!r}, now {meta[k]!r}; use another --out")
    held = out / "holdout"
    held.mkdir(exist_ok=True)
    counts = {"train": 0, "holdout": 0, "frames": 0}
    it = range(int(n))
    if progress:
        it = tqdm(it, desc="talking data", unit="utt", dynamic_ncols=True)
    for i in it:
        spec = utterance_spec(seed, i)
        is_held = holdout_voice is not None and spec["voice"].split("+")[0] == holdout_voice
        where = held if is_held else out
        name = f"utt{i:05d}"
        if (where / f"{name}.json").is_file():
            rec = json.loads((where / f"{name}.json").read_text())
        else:
            rec = write_utterance(where, name, spec, fps)
        counts["holdout" if is_held else "train"] += 1
        counts["frames"] += int(rec["frames"])
    meta.update({"n": int(n), **counts})
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0],
                       epilog="examples:\n  python -m engine.demo_world.talking --out data/talking --n 400\n"
                              "  python -m engine.demo_world.talking --out data/talking30 --n 100 --fps 30 "
                              "--holdout-voice none",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--n", type=int, default=400, help="utterances (default 400)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the sentences, voices, rates and pitches (default 0; utterance i depends only "
                        "on seed and i)")
    p.add_argument("--fps", type=float, default=25.0, help="video frame rate of the mouth tracks (default 25)")
    p.add_argument("--holdout-voice", default="en-029",
                   help="accent kept out of training, written under OUT/holdout (default en-029; 'none': keep all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.n < 1:
            raise UsageError("--n must be at least 1")
        if not 1 <= args.fps <= 120:
            raise UsageError("--fps must be in 1 .. 120")
        hold = None if args.holdout_voice.lower() == "none" else args.holdout_voice
        if hold is not None and hold not in _VOICES:
            raise UsageError(f"--holdout-voice must be one of {', '.join(_VOICES)} or none")
        meta = write_dataset(args.out, args.n, seed=args.seed, fps=args.fps, holdout_voice=hold,
                             progress=not args.no_progress)
    except (UsageError, ValueError, OSError, speech.SpeechError) as exc:
        fail(PROG, str(exc))
    print(f"{os.fspath(args.out)}: {meta['train']} training and {meta['holdout']} held-out utterances, "
          f"{meta['frames']} frames at {meta['fps']:g} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
