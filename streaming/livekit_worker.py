"""The avatar as a LiveKit participant of its own: the worker mode of LiveKit Agents' avatars.

    pip install -e '.[livekit]'
    python -m streaming.livekit_worker --url wss://YOUR.livekit.cloud --token AVATAR_TOKEN

It joins the room with the token, waits for the agent participant (or ``--sender IDENTITY``),
receives the agent's speech over LiveKit data streams (``DataStreamAudioReceiver``, topic
``lk.audio_stream``), publishes the face and the voice that drove it, answers ``lk.clear_buffer``
and sends ``lk.playback_started`` and exactly one ``lk.playback_finished`` per segment with the
played position (``StyleCastAvatarRunner``). On the agent's side::

    from livekit.agents.voice.avatar import DataStreamAudioOutput
    session.output.audio = DataStreamAudioOutput(ctx.room, destination_identity="stylecast-avatar")

The token must allow publishing and be for the identity the agent sends to. Stops on Ctrl-C or
when the room disconnects.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

from engine.cli_util import ArgumentParser, fail

PROG = "python -m streaming.livekit_worker"


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(prog=PROG, description="The StyleCast avatar as a LiveKit participant (LiveKit Agents' "
                        "avatar worker mode): the agent's speech in over data streams, face and voice out.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n"
                               f"  {PROG} --url wss://my.livekit.cloud --token $AVATAR_TOKEN\n"
                               f"  {PROG} --url ws://127.0.0.1:7880 --token $T --sender agent-1 --identity 7")
    ap.add_argument("--url", required=True, help="the LiveKit server, ws:// or wss://")
    ap.add_argument("--token", required=True, help="an access token for the avatar's identity (may publish)")
    ap.add_argument("--sender", default=None, help="the agent's identity (default: the first agent participant)")
    ap.add_argument("--generator", default="demo", help="generator (default the demo face)")
    ap.add_argument("--identity", type=int, default=0, help="the face: a seed (default 0)")
    ap.add_argument("--fps", type=float, default=25.0, help="video frames per second (default 25)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    return ap


async def run(args) -> None:
    from livekit import rtc
    from livekit.agents.voice.avatar import DataStreamAudioReceiver

    from engine.avatar import AvatarEngine
    from streaming.integrations.livekit import StyleCastAvatarRunner, StyleCastVideoGenerator

    engine = await asyncio.to_thread(AvatarEngine, args.generator, device=args.device)
    room = rtc.Room()
    await room.connect(args.url, args.token)
    gone = asyncio.Event()
    room.on("disconnected", lambda *_: gone.set())
    gen = StyleCastVideoGenerator(engine, fps=args.fps, identity=args.identity)
    runner = StyleCastAvatarRunner(room, audio_recv=DataStreamAudioReceiver(room, sender_identity=args.sender),
                                   video_gen=gen)
    try:
        await runner.start()
        print(f"{PROG}: in room {room.name!r} as {room.local_participant.identity!r}", file=sys.stderr, flush=True)
        done = asyncio.ensure_future(runner.wait_for_complete())
        await asyncio.wait([done, asyncio.ensure_future(gone.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        await runner.aclose()
        await gen.aclose()
        await room.disconnect()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if not args.url.startswith(("ws://", "wss://", "http://", "https://")):
        fail(PROG, f"--url must be a ws:// or wss:// address, got {args.url!r}")
    try:
        import livekit.agents  # noqa: F401
    except ImportError:
        fail(PROG, "the livekit extra is not installed: pip install 'stylecast[livekit]'")
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:        # a refused token, an unreachable server: one line, not a traceback
        fail(PROG, f"{type(exc).__name__}: {exc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
