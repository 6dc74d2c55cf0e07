"""Speech with ground-truth mouth motion: espeak-ng's audio and its own phoneme timing.

The demo world needs a mouth-opening track that does **not** come from the audio features the
motion model sees. espeak-ng knows exactly which phoneme it is producing when: its library
(``libespeak-ng.so.1``, the engine behind the ``espeak-ng`` command) reports a PHONEME event with
the audio position of every phoneme when initialised with ``espeakINITIALIZE_PHONEME_EVENTS``.
This module drives the library through ``ctypes`` in synchronous retrieval mode and returns the
samples together with the phoneme timeline (:func:`synthesize`); :func:`mouth_track` turns the
timeline into a per-video-frame mouth opening in [0, 1] from articulation classes (open vowels
wide, close vowels and approximants half, labials and pauses closed) with a short coarticulation
smoothing, sampled at the frame rate.

The library keeps global state that a voice variant (``+f2``, ...) changes for good: in one
process, "en" spoken after "en+f2" is not the "en" of a fresh process, and even
``espeak_Terminate`` + ``espeak_Initialize`` do not undo it. So every synthesis runs in a forked
child process that initialises the library from scratch (a few ms): an utterance depends only
on its own arguments, whatever was spoken before. Everything fails with a clear
:class:`SpeechError` when libespeak-ng is not installed (Debian: ``espeak-ng``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Phoneme", "Utterance", "SpeechError", "synthesize", "mouth_track", "openness", "available", "voices"]

_EVENT_WORD, _EVENT_END, _EVENT_MSG_TERMINATED, _EVENT_PHONEME = 1, 5, 6, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3


class SpeechError(RuntimeError):
    """espeak-ng is missing or refused the request (one-line message)."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_lock = threading.Lock()
_lib = None
_rate = 0


def _load():
    """The library, loaded but not initialised (no synthesis state touched)."""
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise SpeechError("libespeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)") from None


def _library():
    """Load and initialise the library (only ever inside the synthesis child process)."""
    global _lib, _rate
    if _lib is not None:
        return _lib
    lib = _load()
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100, None, _INIT_PHONEME_EVENTS)
    if rate <= 0:
        raise SpeechError("espeak_Initialize failed (is espeak-ng-data installed?)")
    _lib, _rate = lib, int(rate)
    return lib


def available() -> bool:
    """Whether libespeak-ng can be loaded here."""
    try:
        _load()
        return True
    except SpeechError:
        return False


@dataclass(frozen=True)
class Phoneme:
    name: str           # espeak-ng phoneme mnemonic ("a", "oU", "p", "_:" for a pause, ...)
    start: int          # first sample (at Utterance.sample_rate)
    end: int            # one past the last sample (the next phoneme's start, or the end of the audio)


@dataclass(frozen=True)
class Utterance:
    samples: np.ndarray         # int16 mono
    sample_rate: int            # espeak-ng's output rate (22050 Hz)
    phonemes: tuple[Phoneme, ...]
    text: str
    voice: str
    rate_wpm: int
    pitch: int

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate


def synthesize(text: str, *, voice: str = "en", rate_wpm: int = 175, pitch: int = 50) -> Utterance:
    """Speak ``text`` with espeak-ng; returns the audio and its phoneme timeline.

    ``voice``: an espeak-ng voice name, optionally with a variant (``"en-us"``, ``"en+f3"``);
    ``rate_wpm``: 80..450 words per minute; ``pitch``: 0..100. Runs in a fresh forked process
    (see the module docstring), so the result depends only on these arguments.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if not 80 <= int(rate_wpm) <= 450:
        raise ValueError(f"rate_wpm must be in 80..450, got {rate_wpm}")
    if not 0 <= int(pitch) <= 100:
        raise ValueError(f"pitch must be in 0..100, got {pitch}")
    _load()                                          # a missing library is reported here, in the caller

    with _lock:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                 # child: fresh library state, one synthesis, exit
            code = 0
            try:
                os.close(r)
                try:
                    result = ("ok", _synthesize_here(text, voice, int(rate_wpm), int(pitch)))
                except BaseException as exc:  # sent to the parent, re-raised there
                    result, code = ("error", f"{type(exc).__name__}: {exc}"), 1
                with os.fdopen(w, "wb") as f:
                    f.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
            finally:
                os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
    if not data:
        raise SpeechError("the espeak-ng synthesis process died")
    kind, value = pickle.loads(data)                 # our own child's reply
    if kind == "error":
        if value.startswith("SpeechError: "):
            raise SpeechError(value[len("SpeechError: "):])
        raise SpeechError(value)
    return value


def _synthesize_here(text: str, voice: str, rate_wpm: int, pitch: int) -> Utterance:
    chunks: list[np.ndarray] = []
    events: list[tuple[str, int]] = []
    n_out = [0]

    def on_synth(wav, n, ev):
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.int16, copy=True))
        i = 0
        while ev and ev[i].type != 0:
            e = ev[i]
            if e.type == _EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                events.append((name, int(e.sample) if e.sample else -1, int(e.audio_position)))
            i += 1
        n_out[0] += max(0, n)
        return 0

    cb = _CALLBACK(on_synth)
    data = text.encode("utf-8") + b"\0"
    lib = _library()
    lib.espeak_SetSynthCallback(cb)
    if lib.espeak_SetVoiceByName(voice.encode("utf-8")) != 0:
        raise SpeechError(f"espeak-ng has no voice {voice!r}")
    lib.espeak_SetParameter(_ESPEAK_RATE, int(rate_wpm), 0)
    lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
    err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
    if err != 0:
        raise SpeechError(f"espeak_Synth failed with code {err}")
    rate = _rate
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    total = samples.size
    # audio_position is in ms from the start of the message; convert to samples and make the
    # timeline a partition of [first phoneme, end of audio)
    starts = [(name, min(total, int(round(pos_ms * rate / 1000.0)))) for name, _, pos_ms in events]
    phonemes = []
    for i, (name, start) in enumerate(starts):
        end = starts[i + 1][1] if i + 1 < len(starts) else total
        if end > start:
            phonemes.append(Phoneme(name, start, end))
    return Utterance(samples, rate, tuple(phonemes), text, voice, int(rate_wpm), int(pitch))


# -- mouth opening from articulation ---------------------------------------------------------------
_OPEN_VOWELS = set("aA&0V") | {"a#", "aI", "aU", "A:", "A@", "a:", "O", "O:", "OI", "e@", "3:", "aI@", "aU@"}
_MID_VOWELS = set("eE@3oO") | {"eI", "oU", "@L", "@2", "@5", "3", "o@", "O@", "E2", "e", "E"}
_CLOSE_VOWELS = set("iIuU") | {"i:", "u:", "i@", "U@", "I2", "I#", "i@3", "u@", "j"}
_LABIAL = set("pbmfvw")
_PAUSE_PREFIX = "_"


def openness(name: str) -> float:
    """Mouth opening (0 closed … 1 wide) while espeak-ng produces phoneme ``name``: open vowels
    1.0, mid vowels 0.7, close vowels and /j/ 0.45, other consonants 0.25 (dental/alveolar/velar
    ones leave the lips apart), labials (p b m f v w) and pauses 0."""
    n = name.strip().rstrip(";").replace("'", "").replace(",", "")
    if not n or n.startswith(_PAUSE_PREFIX):
        return 0.0
    if n in _OPEN_VOWELS:
        return 1.0
    if n in _MID_VOWELS:
        return 0.7
    if n in _CLOSE_VOWELS:
        return 0.45
    if n[0] in _LABIAL:
        return 0.0
    if n[0] in "aAV&0":
        return 1.0
    if n[0] in "eEoO@3":
        return 0.7
    if n[0] in "iIuU":
        return 0.45
    return 0.25


def mouth_track(utt: Utterance, fps: float = 25.0, *, smooth_ms: float = 30.0,
                frames: Optional[int] = None) -> np.ndarray:
    """Mouth opening per video frame [T] float32 in [0, 1] for ``utt``.

    The phoneme timeline is rendered as a step function at 1 ms resolution (each phoneme's
    :func:`openness`), smoothed with a Gaussian of ``smooth_ms`` standard deviation
    (coarticulation: the lips move between targets, they do not jump) and averaged over each
    video frame's interval [k/fps, (k+1)/fps). T defaults to ceil(duration · fps).
    """
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    dur_ms = int(math.ceil(utt.duration_s * 1000.0))
    step = np.zeros(max(dur_ms, 1), np.float64)
    for p in utt.phonemes:
        a = int(p.start * 1000 // utt.sample_rate)
        b = int(math.ceil(p.end * 1000 / utt.sample_rate))
        step[a:b] = openness(p.name)
    if smooth_ms > 0:
        r = int(3 * smooth_ms)
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / smooth_ms) ** 2)
        step = np.convolve(np.pad(step, r, mode="edge"), k / k.sum(), mode="valid")
    T = int(math.ceil(utt.duration_s * fps - 1e-9)) if frames is None else int(frames)
    out = np.zeros(T, np.float32)
    for i in range(T):
        a, b = int(round(i * 1000 / fps)), int(round((i + 1) * 1000 / fps))
        seg = step[a:min(b, step.size)]
        out[i] = float(seg.mean()) if seg.size else 0.0
    return np.clip(out, 0.0, 1.0)


def voices(language: str = "en") -> list[str]:
    """Voice names (with variants) usable for training/held-out splits: ``en``, ``en-us`` …, each
    also with the variants ``+m3``, ``+f2``, ``+f4`` (male and female timbres)."""
    base = {"en": ["en", "en-us", "en-gb-scotland", "en-gb-x-rp"]}.get(language, [language])
    return [b + v for b in base for v in ("", "+m3", "+f2", "+f4")]
