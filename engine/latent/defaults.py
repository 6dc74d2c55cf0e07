"""Which directions an engine uses when none are given: cached discovered → discovered now →
placeholder, each said in one line.

Discovered sets are cached by checkpoint hash under ``$STYLECAST_CACHE/directions/``
(``<hash>-<measure>-v<DISCOVERY_VERSION>.json`` + ``.report.json``; ``python -m engine.directions discover`` writes
them too). A checkpoint whose samples held no face is remembered (``<hash>-landmarks.noface``),
so the engine does not try again on every start.
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Callable, Optional

from engine.faces.landmark_measure import LandmarkMeasure
from engine.latent.direction_set import DirectionSet
from engine.latent.discover import (
    DISCOVERY_VERSION,
    GeneratorSource,
    NoFaceError,
    discover,
)
from engine.synthesis.presets import cache_dir as stylecast_cache_dir

__all__ = ["MEASURES", "PLACEHOLDER_WARNING", "cache_dir", "cached_path", "report_path", "save_cached",
           "find_cached", "faces_available", "resolve_directions"]

MEASURES = ("landmarks", "probes")
PLACEHOLDER_WARNING = ("placeholder directions: the lips will not follow speech; install stylecast[faces] "
                       "or pass --directions")


def cache_dir() -> Path:
    return stylecast_cache_dir() / "directions"


def cached_path(checkpoint_hash: str, measure: str) -> Path:
    return cache_dir() / f"{checkpoint_hash}-{measure}-v{DISCOVERY_VERSION}.json"


def report_path(path: Path) -> Path:
    """The report written beside a direction set: ``<stem>.report.json``."""
    return path.with_name(path.stem + ".report.json")


def save_cached(checkpoint_hash: str, measure: str, ds: DirectionSet, report: dict) -> Path:
    """Cache a discovered set and its report by checkpoint hash; returns the set's path."""
    path = cached_path(checkpoint_hash, measure)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save(path)
    report_path(path).write_text(json.dumps(report, indent=1) + "\n")
    return path


def find_cached(checkpoint_hash: str) -> Optional[Path]:
    """The cached discovered set of this checkpoint (landmarks first), or None."""
    for m in MEASURES:
        p = cached_path(checkpoint_hash, m)
        if p.is_file():
            return p
    return None


def faces_available() -> bool:
    """Whether the ``faces`` extra (dlib, its models, OpenCV) is installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("dlib", "cv2", "face_recognition_models"))


def _say(log: Optional[Callable[[str], None]], msg: str) -> None:
    if log is not None:
        log(msg)
    else:
        warnings.warn(msg, stacklevel=3)


def resolve_directions(G, placeholder: Callable[[object], DirectionSet], *, checkpoint_hash: str,
                       log: Optional[Callable[[str], None]] = None, discover_now: bool = True,
                       progress: bool = True) -> tuple[DirectionSet, str]:
    """``(directions, kind)`` for a generator given no directions, kind ``"cached"``,
    ``"discovered"`` or ``"placeholder"``; says which in one line (``log``, else a warning)."""
    cached = find_cached(checkpoint_hash)
    if cached is not None:
        try:
            ds = DirectionSet.load(cached, num_ws=int(G.num_ws), w_dim=int(G.w_dim), checkpoint_hash=checkpoint_hash)
            _say(log, f"directions: discovered earlier for this checkpoint ({cached})")
            return ds, "cached"
        except (ValueError, OSError) as exc:
            _say(log, f"directions: the cached set {cached} is unreadable ({exc}); ignoring it")
    noface = cache_dir() / f"{checkpoint_hash}-landmarks.noface"
    if discover_now and faces_available() and not noface.is_file():
        _say(log, "directions: discovering this generator's motion directions with the face measure "
                  "(once; cached by checkpoint hash)")
        try:
            source = GeneratorSource(G, checkpoint_hash=checkpoint_hash)
            ds, report = discover(source, LandmarkMeasure(), progress=progress, log=log)
        except (NoFaceError, ValueError) as exc:
            noface.parent.mkdir(parents=True, exist_ok=True)
            noface.write_text(str(exc) + "\n")
            _say(log, f"directions: discovery failed ({exc})")
        else:
            report["settings"]["aligned"] = "auto"
            save_cached(checkpoint_hash, "landmarks", ds, report)
            return ds, "discovered"
    elif noface.is_file():
        _say(log, f"directions: an earlier discovery found no faces in this generator's samples ({noface})")
    _say(log, PLACEHOLDER_WARNING)
    return placeholder(G), "placeholder"
