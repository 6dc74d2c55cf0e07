"""Where the browser client is: the installed ``web_client`` package (package data of the wheel, or
the checkout's folder in an editable install), checked before the server starts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["WEB_CLIENT_FILES", "WebClientMissing", "find_web_root", "check_web_root"]

#: What the page cannot work without; ``create_app`` refuses a web root that lacks one of them.
WEB_CLIENT_FILES = ("index.html", "app.js")


class WebClientMissing(FileNotFoundError):
    """The browser client is not there (a broken install, a wrong ``web_root``); a one-line message."""


def find_web_root() -> Path:
    """The folder of the installed ``web_client`` package (index.html, app.js, style.css: package
    data of the wheel, or the checkout's folder in an editable install); :class:`WebClientMissing`
    when the package or its files are not installed."""
    try:
        spec = importlib.util.find_spec("web_client")
    except (ImportError, ValueError):
        spec = None
    locations = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    if not locations:
        raise WebClientMissing("web client not found: the web_client package is not installed "
                               "(reinstall stylecast with the serve extra)")
    for root in locations:
        if all((root / name).is_file() for name in WEB_CLIENT_FILES):
            return root.resolve()
    return check_web_root(locations[0], "a broken install: reinstall stylecast with the serve extra")


def check_web_root(root: Path, hint: str = "ServerConfig.web_root") -> Path:
    """``root`` resolved, or :class:`WebClientMissing` naming the first missing file."""
    root = Path(root)
    for name in WEB_CLIENT_FILES:
        if not (root / name).is_file():
            raise WebClientMissing(f"web client not found: {root / name} is missing ({hint})")
    return root.resolve()
