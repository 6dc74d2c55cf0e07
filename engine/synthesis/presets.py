"""Named generators: ``demo`` (built in) and the official NVlabs FFHQ StyleGAN2 pickles.

The FFHQ networks are downloaded on first use into the cache directory (``$STYLECAST_CACHE``,
default ``~/.cache/stylecast``) and read from there afterwards. Downloads go to a ``.part`` file
that is renamed into place only when complete, so an interrupted download never poses as a
checkpoint. Without a network the call fails at once with an error that says to pass a local
file; ``STYLECAST_OFFLINE=1`` makes it fail without trying.

A preset's URL can be overridden with ``STYLECAST_PRESET_URL_<NAME>`` (e.g.
``STYLECAST_PRESET_URL_FFHQ256=http://mirror.local/ffhq256.pkl``), for mirrors and tests.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from engine.synthesis.formats.common import CheckpointError
from engine.synthesis.integrity import file_sha256

__all__ = ["Preset", "PRESETS", "PRESET_NAMES", "cache_dir", "preset_url", "fetch_preset"]

_NVLABS_SOURCE_NETS = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/"
)
DEFAULT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Preset:
    name: str
    url: str
    filename: str
    description: str
    #: the file's sha256, checked after download and on every load; None: not pinned yet, and the
    #: hash of the first download is recorded next to it (``<file>.sha256``) and checked from then on
    sha256: Optional[str] = None


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "ffhq256",
            _NVLABS_SOURCE_NETS + "ffhq-res256-mirror-paper256-noaug.pkl",
            "ffhq-res256-mirror-paper256-noaug.pkl",
            "FFHQ faces, 256 px, NVlabs stylegan2-ada-pytorch (paper256 config)",
        ),
        Preset(
            "ffhq512",
            _NVLABS_SOURCE_NETS + "ffhq-res512-mirror-stylegan2-noaug.pkl",
            "ffhq-res512-mirror-stylegan2-noaug.pkl",
            "FFHQ faces, 512 px, NVlabs stylegan2-ada-pytorch (stylegan2 config)",
        ),
        Preset(
            "ffhq1024",
            _NVLABS_SOURCE_NETS + "ffhq-res1024-mirror-stylegan2-noaug.pkl",
            "ffhq-res1024-mirror-stylegan2-noaug.pkl",
            "FFHQ faces, 1024 px, NVlabs stylegan2-ada-pytorch (stylegan2 config)",
        ),
    )
}

#: Every name ``load_generator`` accepts instead of a path.
#: "demo" is the trained demo generator shipped in engine/assets; "random" the untrained,
#: seeded StyleGAN2 of the demo shape (made in memory; for tests and timing)
PRESET_NAMES = ("demo", "random", *PRESETS)


def cache_dir() -> Path:
    """``$STYLECAST_CACHE`` if set, else ``~/.cache/stylecast``."""
    env = os.environ.get("STYLECAST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "stylecast"


def preset_url(name: str) -> str:
    """The download URL of preset ``name`` (``STYLECAST_PRESET_URL_<NAME>`` overrides it)."""
    return os.environ.get(f"STYLECAST_PRESET_URL_{name.upper()}") or PRESETS[name].url


def _offline() -> bool:
    return os.environ.get("STYLECAST_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_preset(name: str, *, progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Path of the cached checkpoint for preset ``name``, downloading it first if needed.

    Raises :class:`CheckpointError` (naming the cache file and the URL) when the preset is
    unknown, when ``STYLECAST_OFFLINE`` is set and the file is not cached, or when the download
    fails; the message tells the user to pass a local checkpoint file instead.
    """
    if name not in PRESETS:
        raise CheckpointError(f"{name}: unknown preset (presets: {', '.join(PRESET_NAMES)})")
    preset = PRESETS[name]
    dest = cache_dir() / preset.filename
    record = dest.with_name(dest.name + ".sha256")
    if dest.is_file():
        _verify(name, dest, record, preset.sha256)
        return dest
    url = preset_url(name)
    advice = (
        f"download {url} yourself and pass the local file instead "
        f"(e.g. load_generator('/path/to/{preset.filename}')), or put it at {dest}"
    )
    if _offline():
        raise CheckpointError(f"{dest}: preset '{name}' is not cached and STYLECAST_OFFLINE is set; {advice}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"{dest}: cannot create the cache directory ({exc.strerror or exc})") from None
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        got = _download(url, part, desc=f"stylecast: downloading {name}", progress=progress, timeout=timeout)
        if preset.sha256 is not None and got != preset.sha256:
            raise CheckpointError(f"{dest}: the download of preset '{name}' from {url} has sha256 {got}, "
                                  f"not the pinned {preset.sha256}; it was not kept")
        record.write_text(got + "\n")
        os.replace(part, dest)
    except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError, ValueError) as exc:
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
        else:
            reason = getattr(exc, "reason", None) or exc
        raise CheckpointError(f"{dest}: could not download preset '{name}' from {url} ({reason}); {advice}") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def _verify(name: str, dest: Path, record: Path, pinned: Optional[str]) -> None:
    """A cached preset must still have the pinned hash, or the one recorded at download."""
    expected = pinned
    if expected is None and record.is_file():
        expected = record.read_text().strip() or None
    if expected is None:
        return
    got = file_sha256(dest)
    if got != expected:
        raise CheckpointError(f"{dest}: the cached preset '{name}' has sha256 {got}, not {expected} "
                              "(damaged or replaced since it was downloaded); delete it to fetch it again")


def _download(url: str, part: Path, *, desc: str, progress: bool, timeout: float) -> str:
    """Stream ``url`` into ``part``; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "stylecast"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        written = 0
        with open(part, "wb") as f, tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
            disable=not progress, file=sys.stderr, leave=False,
        ) as bar:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                digest.update(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    if total is not None and written != total:
        raise ValueError(f"download ended after {written} of {total} bytes")
    return digest.hexdigest()
