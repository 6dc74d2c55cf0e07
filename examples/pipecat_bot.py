"""A local voice bot with the StyleCast avatar on Pipecat: no cloud service, no download.

    pip install -e '.[serve,pipecat]'    # and espeak-ng (apt-get install espeak-ng)
    python examples/pipecat_bot.py       # then open http://127.0.0.1:7860 and press Start

The page sends your microphone over WebRTC to pipecat's SmallWebRTCTransport (aiortc). Silero
VAD (shipped inside pipecat) takes the turns: when you stop speaking the bot answers through
espeak-ng, with the avatar's face and voice leaving together (``StyleCastVideoService``); speak
over it and it stops at once (barge-in: an InterruptionFrame). The "brain" here only says how
long you spoke; a real bot puts speech-to-text and an LLM in its place::

    pipeline = Pipeline([transport.input(), VADProcessor(...), stt, user_aggregator, llm, tts,
                         avatar, transport.output(), assistant_aggregator])

Options: --host, --port, --fps, --size (output pixels), --identity (a seed), --max-bots.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from typing import Optional

from aiohttp import web
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (BotStartedSpeakingFrame, BotStoppedSpeakingFrame, TTSSpeakFrame,
                                   VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from engine.avatar import AvatarEngine
from streaming.integrations.pipecat import StyleCastVideoService
from streaming.integrations.pipecat_espeak import EspeakTTSService
from streaming.offer_check import check_offer

log = logging.getLogger("stylecast.pipecat_bot")

#: the VAD ends a turn after this much silence (pipecat's 0.2 s default expects a turn model after it;
#: with none, a comma's pause would end the turn)
GREETING = "Hello! I am the StyleCast demo face. Say something, and I will answer."
OUT_RATE = 24000


class EchoBrain(FrameProcessor):
    """Stands in for speech-to-text and an LLM: answers each user turn by its length. A user who
    starts speaking while the bot talks interrupts it."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: list[float] = []          # seconds of each user turn (VAD start to stop)
        self._started: Optional[float] = None
        self._bot_speaking = False

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM:
            self._started = time.monotonic()
            if self._bot_speaking:
                await self.broadcast_interruption()
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and direction == FrameDirection.DOWNSTREAM:
            if self._started is not None:
                spoke = time.monotonic() - self._started - float(getattr(frame, "stop_secs", 0.0) or 0.0)
                self._started = None
                self.turns.append(spoke)
                await self.push_frame(frame, direction)
                await self.push_frame(TTSSpeakFrame(f"You spoke for about {max(spoke, 0.1):.1f} seconds. "
                                                    "Tell me more."))
                return
        await self.push_frame(frame, direction)


class BotServer:
    """``POST /offer`` ({"sdp", "type"}) starts one bot per peer connection (at most ``max_bots``);
    ``GET /`` is the page. All bots share one engine (its synthesis is serialised)."""

    def __init__(self, engine: AvatarEngine, *, fps: float = 25.0, identity=0, max_bots: int = 4,
                 greeting: str = GREETING) -> None:
        self.engine, self.fps, self.identity, self.max_bots, self.greeting = engine, fps, identity, max_bots, greeting
        self.bots: dict[str, dict] = {}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024)
        app.router.add_get("/", self.page)
        app.router.add_post("/offer", self.offer)
        app.on_shutdown.append(self.close_all)
        return app

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def offer(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            sdp, kind = body["sdp"], body.get("type", "offer")
            if not isinstance(sdp, str) or kind != "offer":
                raise ValueError("want {'sdp': str, 'type': 'offer'}")
            check_offer(sdp)                      # the StyleCast server's checks: parseable, receives video, ...
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad offer: {exc}"}, status=400)
        if len(self.bots) >= self.max_bots:
            return web.json_response({"error": f"all {self.max_bots} bots are busy, try again later"}, status=503)
        conn = SmallWebRTCConnection(ice_servers=[])
        try:
            await conn.initialize(sdp=sdp, type=kind)
        except Exception as exc:                  # aiortc's own errors on a malformed SDP
            with contextlib.suppress(Exception):
                await conn.disconnect()
            return web.json_response({"error": f"bad offer: {exc}"}, status=400)
        answer = conn.get_answer()
        self.bots[answer["pc_id"]] = bot = {"conn": conn}
        bot["task"] = asyncio.ensure_future(self._run(answer["pc_id"], conn, bot))
        return web.json_response({"sdp": answer["sdp"], "type": answer["type"], "session_id": answer["pc_id"]})

    async def _run(self, pc_id: str, conn: SmallWebRTCConnection, bot: dict) -> None:
        size = self.engine.resolution
        transport = SmallWebRTCTransport(webrtc_connection=conn, params=TransportParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_out_sample_rate=OUT_RATE,
            video_out_enabled=True, video_out_width=size, video_out_height=size, video_out_framerate=int(self.fps)))
        brain = EchoBrain()
        avatar = StyleCastVideoService(engine=self.engine, fps=self.fps, identity=self.identity)
        pipeline = Pipeline([transport.input(), VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.8))), brain,
                             EspeakTTSService(), avatar, transport.output()])
        worker = PipelineWorker(pipeline, cancel_on_idle_timeout=False,
                                params=PipelineParams(enable_metrics=True, audio_out_sample_rate=OUT_RATE))
        bot.update(brain=brain, avatar=avatar, worker=worker)

        @transport.event_handler("on_client_connected")
        async def _connected(_transport, _client):
            await worker.queue_frame(TTSSpeakFrame(self.greeting))

        @transport.event_handler("on_client_disconnected")
        async def _gone(_transport, _client):
            await worker.cancel()

        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        except Exception:
            log.exception("bot %s failed", pc_id)
        finally:
            self.bots.pop(pc_id, None)
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def close_all(self, _app=None) -> None:
        """Cancel every bot and wait (at most 5 s) for their pipelines to end."""
        tasks = []
        for bot in list(self.bots.values()):
            if "worker" in bot:
                with contextlib.suppress(Exception):
                    await bot["worker"].cancel()
            tasks.append(bot["task"])
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()


PAGE = """<!doctype html><meta charset="utf-8"><title>StyleCast bot</title>
<style>body{font:15px system-ui;margin:2em}video{width:384px;height:384px;background:#222}</style>
<h1>StyleCast voice bot</h1><video id="v" autoplay playsinline></video><br>
<button id="go">Start</button> <span id="st">idle</span>
<script>
go.onclick = async () => {
  go.disabled = true; st.textContent = "connecting";
  const pc = new RTCPeerConnection();
  const mic = await navigator.mediaDevices.getUserMedia(
      {audio: {echoCancellation: true, noiseSuppression: true, autoGainControl: true}});
  mic.getTracks().forEach(t => pc.addTrack(t, mic));
  pc.addTransceiver("video", {direction: "recvonly"});
  const remote = new MediaStream(); v.srcObject = remote;
  pc.ontrack = e => remote.addTrack(e.track);
  pc.onconnectionstatechange = () => st.textContent = pc.connectionState;
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === "complete") r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && r(); setTimeout(r, 2000); });
  const res = await fetch("/offer", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  const ans = await res.json();
  if (!res.ok) { st.textContent = ans.error; go.disabled = false; return; }
  await pc.setRemoteDescription({sdp: ans.sdp, type: ans.type});
};
</script>"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python examples/pipecat_bot.py", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--size", type=int, default=None, help="output pixels (default the generator's)")
    ap.add_argument("--identity", type=int, default=0, help="the face: a seed")
    ap.add_argument("--max-bots", type=int, default=4)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    engine = AvatarEngine("demo", resolution=args.size)
    server = BotServer(engine, fps=args.fps, identity=args.identity, max_bots=args.max_bots)
    print(f"StyleCast bot on http://{args.host}:{args.port}", flush=True)
    web.run_app(server.app(), host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
