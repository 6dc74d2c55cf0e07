"""Serve the avatar over WebRTC: ``python -m engine.serve --device 0 --port 8080``, then open the page."""
from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path
from typing import Optional, Sequence

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

PROG = "python -m engine.serve"
EPILOG = """examples:
  # the built-in demo generator on the CPU, http://127.0.0.1:8080/
  python -m engine.serve --device cpu

  # FFHQ 512 on the first GPU, 30 fps, 256 px output, at most 2 clients, reachable on the LAN
  python -m engine.serve --device 0 --generator ffhq512 --resolution 256 --fps 30 --max-sessions 2 --host 0.0.0.0

  # many clients on one GPU: the fastest backend here, sessions batched into one synthesis call
  python -m engine.serve --device cuda:0 --generator ffhq512 --backend auto --max-sessions 8

--gpu is the alias of --device (python -m engine.serve --gpu 0 is the same as --device 0).

On a loopback --host (127.0.0.1, localhost, ::1) only 127.0.0.1 ICE candidates are offered.
Ctrl-C closes every peer connection and exits.
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", "--gpu", dest="device", default="cpu",
                   help="cpu, cuda, cuda:N or a GPU index (default cpu); a GPU without CUDA falls back to the CPU "
                        "with a notice. --gpu is the alias (--gpu 0 = --device 0)")
    p.add_argument("--threads", type=thread_count, default=None, help=THREADS_HELP)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 = any free port)")
    p.add_argument("--generator", default="demo",
                   help="demo (default, built in), ffhq256/512/1024, or a checkpoint path (.pkl/.pt/.safetensors)")
    add_expect_sha256(p)
    p.add_argument("--resolution", type=int, default=None, help="output image side in pixels (default: the generator's)")
    p.add_argument("--fps", type=finite_float, default=25.0, help="video frames per second (default 25)")
    p.add_argument("--max-sessions", type=int, default=None,
                   help="upper bound on concurrent clients (default: as many as the capacity measured at start "
                        "keeps at full frame rate); beyond it, or beyond the live capacity, clients get HTTP 503")
    p.add_argument("--no-malloc-tuning", dest="malloc_tuning", action="store_false",
                   help="keep glibc's default allocator (large blocks mmapped and returned on free): a lower, "
                        "steadier resident set for a slower CPU frame (see benchmarks.synthesis)")
    p.add_argument("--no-admission", dest="admission", action="store_false",
                   help="admit up to --max-sessions (default 4 then) without the capacity check: streams may "
                        "then all slow down together")
    p.add_argument("--identity", default="0",
                   help="face of new sessions: a seed (default 0), a .npy with w / ws, or an identity .npz "
                        "from python -m engine.invert (an inverted photo)")
    p.add_argument("--directions", type=Path, default=None,
                   help="direction-set JSON (python -m engine.directions discover / engine.basis name); default: "
                        "the demo's shipped set, else the set discovered for this checkpoint (cached), discovery "
                        "now with the faces extra, or a loudly announced PCA placeholder")
    p.add_argument("--truncation", type=finite_float, default=0.7, help="truncation psi (default 0.7)")
    p.add_argument("--driver", default="default",
                   help="motion driver: default (the shipped audio LSTM over idle blinks and sway; idle on placeholder "
                        "directions), "
                        "idle, lstm:PATH.safetensors, trajectory:PATH.npy")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"),
                   help="synthesis dtype (default float32)")
    p.add_argument("--backend", default=None, choices=("auto", "torch", "onnx", "trt"),
                   help="synthesis backend (engine.synthesis.backends; default: plain torch G.synthesis); "
                        "auto/onnx/trt may export or build once on the first start (slow)")
    p.add_argument("--batching", action=argparse.BooleanOptionalAction, default=True,
                   help="batch concurrent sessions' synthesis into one call per round (default on: on this "
                        "2-core CPU 2 sessions hold 25 fps batched, 1 without; --no-batching to compare)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin (scheme://host:port) besides the server's own page whose scripts may open "
                        "sessions (repeatable; default none: a cross-site page cannot occupy the slots)")
    p.add_argument("--stun", action="append", default=None, metavar="URL",
                   help="STUN/TURN server URL for ICE (repeatable; 'none' for no server). Default: none on a "
                        "loopback --host, aiortc's default STUN server otherwise")
    p.add_argument("--no-photo-upload", dest="photo_upload", action="store_false",
                   help="refuse POST /photo (the page's photo upload: align and invert a photo into the session)")
    p.add_argument("--photo-steps", type=int, default=300, metavar="N",
                   help="W steps of an uploaded photo's inversion (default 300; then --photo-wplus-steps in W+)")
    p.add_argument("--photo-wplus-steps", type=int, default=200, metavar="N", help="W+ steps after them (default 200)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                   help="logging level of the server, aiohttp and aiortc (default info; aioice/aiortc at most "
                        "warning)")
    return p


def pick_device(gpu: str) -> str:
    """``cpu`` or a CUDA device name for ``--device`` / ``--gpu`` (parsed with
    :func:`engine.cli_util.resolve_device`); a GPU request without CUDA prints a one-line notice and
    gives ``cpu``."""
    import torch

    name = gpu.strip().lower()
    if name == "cpu":
        return "cpu"
    if name.isdigit():
        name = f"cuda:{name}"
    if not name.startswith("cuda"):
        raise UsageError(f"--device/--gpu must be a GPU index, cuda, cuda:N or cpu, got {gpu!r}")
    if not torch.cuda.is_available():
        sys.stderr.write(f"{PROG}: CUDA not available, falling back to CPU\n")
        return "cpu"
    try:
        device = resolve_device(name)
    except UsageError:
        raise UsageError(f"--device/--gpu must be a GPU index, cuda, cuda:N or cpu, got {gpu!r}") from None
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:       # Ctrl-C while the generator/backend is still loading
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


def _main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not 0 <= args.port <= 65535:
            raise UsageError("--port must be in 0 .. 65535")
        if args.max_sessions is not None and args.max_sessions < 1:
            raise UsageError("--max-sessions must be at least 1")
        if not 0 < args.fps <= 120:
            raise UsageError("--fps must be in (0, 120]")
        if args.photo_steps < 1 or args.photo_wplus_steps < 0:
            raise UsageError("--photo-steps must be at least 1 and --photo-wplus-steps at least 0")
        if args.resolution is not None and not 8 <= args.resolution <= 4096:
            raise UsageError("--resolution must be in 8 .. 4096")
        identity = parse_identity(args.identity)
        device = pick_device(args.device)
    except UsageError as exc:
        fail(PROG, str(exc))

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    from aiohttp import web

    from engine.runtime import freeze_startup_objects, limit_malloc_arenas, set_threads, tune_cpu_allocator
    from engine.session import AvatarEngine, AvatarSession
    from streaming.server import (
        STATE_KEY,
        ServerConfig,
        WebClientMissing,
        create_app,
        find_web_root,
        http_options,
    )
    from streaming.workers import use_started_workers

    try:   # the page ships in the package: a missing one stops the start here, not as a 404 on "/"
        web_root = find_web_root()
    except WebClientMissing as exc:
        fail(PROG, str(exc))
    set_threads(args.threads, device)
    limit_malloc_arenas()       # before the session threads: RSS stays flat as sessions come and go
    if device == "cpu" and args.malloc_tuning:
        tune_cpu_allocator()
    try:
        engine = AvatarEngine(args.generator, expect_sha256=args.expect_sha256, device=device, dtype=args.dtype, resolution=args.resolution,
                              truncation_psi=args.truncation, backend=args.backend, batching=args.batching,
                              directions=args.directions,
                              log=lambda msg: print(f"{PROG}: {msg}", file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError, OSError) as exc:
        fail(PROG, f"could not load the generator: {exc}")
    try:   # a bad --driver / --identity is reported now, not at the first client
        AvatarSession(engine, fps=args.fps, identity=identity, driver=args.driver).close()
    except (ValueError, FileNotFoundError, OSError) as exc:
        fail(PROG, f"bad session settings: {exc}")
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        fail(PROG, f"cannot listen on {args.host}:{args.port}: {exc}")
    config = ServerConfig(device=device, host=args.host, port=args.port, generator=args.generator,
                          resolution=engine.resolution, fps=args.fps, admission=args.admission,
                          max_sessions=args.max_sessions if args.max_sessions is not None or args.admission else 4,
                          identity=identity, truncation=args.truncation, driver=args.driver, engine=engine,
                          web_root=web_root, allowed_origins=tuple(args.allow_origin),
                          photo_upload=args.photo_upload, photo_steps=args.photo_steps,
                          photo_wplus_steps=args.photo_wplus_steps,
                          ice_servers=None if args.stun is None else [u for u in args.stun if u.lower() != "none"])
    app = create_app(config)
    use_started_workers(app)    # the thread count stays flat as sessions come and go
    freeze_startup_objects()    # so each closed session's reference cycles are collected at once
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    port = sock.getsockname()[1]

    def announce(_message: str) -> None:
        state = app[STATE_KEY]
        cap = "" if state.capacity is None else f"; {state.capacity.describe()}"
        print(f"StyleCast serving on http://{url_host}:{port}/ ({device}, {engine.resolution} px, "
              f"{args.fps:g} fps, at most {state.registry.max_sessions} sessions{cap}); Ctrl-C to stop", flush=True)

    try:
        web.run_app(app, sock=sock, print=announce, shutdown_timeout=5.0, handle_signals=True, **http_options(config))
    finally:
        engine.close()        # the batching thread, if any
    return 0


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port`` (port 0: any free port), so the real port is known."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    return sock


if __name__ == "__main__":
    raise SystemExit(main())
