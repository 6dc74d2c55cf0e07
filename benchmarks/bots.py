"""The voice-agent integrations over a long session with turns, silences and interruptions.

Both run the same seeded script: espeak-ng sentences (a pool of six, 22 050 Hz) handed over as
40 ms TTS chunks at twice real time, each turn after the previous one has finished playing and
a pause of 0.5-4 s, one turn in four cut off 0.6-2 s after its first chunk:

* ``pipecat``: ``StyleCastVideoService`` in a real pipecat ``Pipeline`` run by a
  ``PipelineWorker`` (metrics on), fed ``TTSStartedFrame`` / ``TTSAudioRawFrame`` /
  ``TTSStoppedFrame`` and, on a cut, ``InterruptionFrame``; what it sends on is recorded by the
  next processor (where the output transport would be);
* ``livekit``: ``StyleCastVideoGenerator`` under ``StyleCastAvatarRunner`` (the in-process mode)
  fed by a real ``QueueAudioOutput`` as the agent's audio output (``capture_frame``, ``flush``,
  and on a cut ``flush`` then ``clear_buffer``, the agent's own order), its real
  ``rtc.AVSynchronizer`` pacing the local sources; the room is the in-process stand-in
  (``streaming.integrations.livekit_local``): no server, nothing is sent. What is measured is
  what the synchronizer accepted, with the time it accepted it.

Measured per run: time from a turn's first TTS chunk to its first talking frame (an image followed
by audio); the A/V offset inside each turn (audio sent before the k-th talking image against
k / fps) and each talking frame's audio length; video time against the wall clock, minute by
minute (drift); gaps between frames (stalls: longer than 3 frame intervals); from a cut to the
first frame whose mouth reads at rest (the demo probes; at rest = the idle frames' 95th
percentile + 10 % of the way to the talking frames') and how much audio still came after it;
LiveKit's ``playback_finished`` count and positions; per-stage times (``AvatarSession.stats``);
the process's RSS per minute.

    python -m benchmarks.bots --minutes 30                 # both, one after the other (~61 min)
    python -m benchmarks.bots --only pipecat --minutes 1

Writes benchmarks/results/bots.json and .png (drift and frames/s per minute).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.bots_analysis import KEEP_AFTER_CUT_S, OUT_RATE, analyse
from benchmarks.common import environment

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "bots.json"
CHUNK_MS = 40
TTS_PACE = 2.0                 # TTS chunks arrive this many times faster than real time
SENTENCES = ("Hello, I am the StyleCast demo face, and I answer when you talk to me.",
             "The weather today is mild, with a little wind from the west.",
             "Let me look that up for you; it will only take a moment.",
             "Yes.",
             "Interesting question! There are three parts to the answer, so bear with me.",
             "Thank you for calling, and have a very good evening.")


@dataclass
class Turn:
    pcm: np.ndarray            # int16 mono
    rate: int
    gap_s: float               # silence before it (after the previous one finished)
    cut_s: Optional[float]     # interrupted this long after its first chunk, or None


def script(minutes: float, seed: int = 0) -> list[Turn]:
    """Turns filling ``minutes`` (pauses and speech counted; a cut turn counts up to its cut)."""
    from engine.demo_world.speech import synthesize
    pool = [synthesize(s) for s in SENTENCES]
    rng = np.random.default_rng(seed)
    turns, total = [], 0.0
    while total < minutes * 60:
        u = pool[int(rng.integers(len(pool)))]
        dur = u.samples.size / u.sample_rate
        cut = float(rng.uniform(0.6, 2.0)) if rng.random() < 0.25 and dur > 2.2 else None
        gap = float(rng.uniform(0.5, 4.0))
        turns.append(Turn(u.samples, u.sample_rate, gap, cut))
        total += gap + (cut if cut is not None else dur)
    return turns


def chunks(turn: Turn):
    n = turn.rate * CHUNK_MS // 1000
    return [turn.pcm[i:i + n] for i in range(0, turn.pcm.size, n)]


class Recorder:
    """Events in order: ("img", t, image or None), ("aud", t, samples), ("start"/"cut"/"end", t, turn)."""

    def __init__(self):
        self.events: list[tuple] = []
        self.keep_until = -1.0
        self.n_img = 0
        self.rss: list[tuple[float, float]] = []

    def image(self, t: float, image_fn) -> None:
        self.n_img += 1
        keep = t < self.keep_until or self.n_img % 50 == 0        # after a cut, and a sample of all
        self.events.append(("img", t, image_fn() if keep else None))

    def audio(self, t: float, samples: int) -> None:
        self.events.append(("aud", t, samples))

    def mark(self, kind: str, turn: int) -> None:
        t = time.perf_counter()
        if kind == "cut":
            self.keep_until = t + KEEP_AFTER_CUT_S
        self.events.append((kind, t, turn))


async def watch_rss(rec: Recorder) -> None:
    import psutil
    proc = psutil.Process()
    while True:
        rec.rss.append((time.perf_counter(), proc.memory_info().rss / 2**20))
        await asyncio.sleep(60)


async def speak(turns: list[Turn], rec: Recorder, start, chunk, stop, cut, owed) -> None:
    """Play the script through one integration's callbacks. ``owed()`` is True while the
    integration has not yet sent back the end of every turn handed to it (TTSStoppedFrame,
    playback_finished): the next turn waits for that (at most the turn's length + 10 s), and a
    turn played to its end is marked "end" then."""
    async def settled(timeout: float) -> None:
        t_end = time.perf_counter() + timeout
        while owed() and time.perf_counter() < t_end:
            await asyncio.sleep(0.02)

    for i, turn in enumerate(turns):
        await asyncio.sleep(turn.gap_s)
        rec.mark("start", i)
        t0 = time.perf_counter()
        await start(i)
        for k, pcm in enumerate(chunks(turn)):
            if turn.cut_s is not None and time.perf_counter() - t0 >= turn.cut_s:
                break
            await chunk(pcm, turn.rate)
            await asyncio.sleep(max(0.0, t0 + (k + 1) * CHUNK_MS / 1000 / TTS_PACE - time.perf_counter()))
        if turn.cut_s is None:
            await stop(i)
            await settled(turn.pcm.size / turn.rate + 10.0)
            rec.mark("end", i)
        else:
            await asyncio.sleep(max(0.0, t0 + turn.cut_s - time.perf_counter()))
            rec.mark("cut", i)
            await cut(i)
            await settled(10.0)


# -- pipecat ----------------------------------------------------------------------------------------

async def run_pipecat(engine, turns: list[Turn], fps: float) -> tuple[Recorder, dict]:
    from pipecat.frames.frames import (EndFrame, InterruptionFrame, MetricsFrame, OutputImageRawFrame,
                                       TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame)
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.task import PipelineParams
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from streaming.integrations.pipecat import AvatarMetricsData, StyleCastVideoService

    rec, done, metrics = Recorder(), {}, []

    class Sink(FrameProcessor):                    # where the output transport would be
        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            t = time.perf_counter()
            if isinstance(frame, OutputImageRawFrame):
                w, h = frame.size
                rec.image(t, lambda: np.frombuffer(frame.image, np.uint8).reshape(h, w, 3))
            elif isinstance(frame, TTSAudioRawFrame):
                rec.audio(t, len(frame.audio) // 2)
            elif isinstance(frame, TTSStoppedFrame):
                done.setdefault(len(done), t)
            elif isinstance(frame, MetricsFrame):
                metrics.extend(d.model_dump() for d in frame.data if isinstance(d, AvatarMetricsData))
            if direction == FrameDirection.DOWNSTREAM:
                await self.push_frame(frame, direction)

    avatar = StyleCastVideoService(engine=engine, fps=fps, audio_out_rate=OUT_RATE)
    worker = PipelineWorker(Pipeline([avatar, Sink()]), cancel_on_idle_timeout=False,
                            params=PipelineParams(enable_metrics=True, audio_out_sample_rate=OUT_RATE))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.ensure_future(runner.run())
    stopped = [0]

    async def start(i):
        await worker.queue_frame(TTSStartedFrame())

    async def chunk(pcm, rate):
        await worker.queue_frame(TTSAudioRawFrame(audio=pcm.tobytes(), sample_rate=rate, num_channels=1))

    async def stop(i):
        stopped[0] += 1
        await worker.queue_frame(TTSStoppedFrame())

    async def cut(i):
        await worker.queue_frame(InterruptionFrame())

    while avatar.session is None:
        await asyncio.sleep(0.05)
    rss = asyncio.ensure_future(watch_rss(rec))
    try:
        await speak(turns, rec, start, chunk, stop, cut, owed=lambda: len(done) < stopped[0])
        await asyncio.sleep(1.0)
        stats = avatar.session.stats()
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(running, 30)
    finally:
        rss.cancel()
    return rec, {"session_stats": stats, "turn_metrics": metrics, "stops_sent": stopped[0], "stops_out": len(done)}


# -- livekit ----------------------------------------------------------------------------------------

async def run_livekit(engine, turns: list[Turn], fps: float) -> tuple[Recorder, dict]:
    from livekit import rtc
    from livekit.agents.voice.avatar import QueueAudioOutput

    from streaming.integrations.livekit import StyleCastAvatarRunner, StyleCastVideoGenerator
    from streaming.integrations.livekit_local import FakeNet

    rec, finished_ev = Recorder(), []
    gen = StyleCastVideoGenerator(engine, fps=fps, sample_rate=OUT_RATE)
    queue = QueueAudioOutput(sample_rate=OUT_RATE)
    queue.on("playback_finished", lambda ev: finished_ev.append(
        (time.perf_counter(), float(ev.playback_position), bool(ev.interrupted))))
    runner = StyleCastAvatarRunner(FakeNet().join("agent", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT),
                                   audio_recv=queue, video_gen=gen)
    real_push = runner.av_sync.push

    async def noted(frame, *a, **kw):
        out = await real_push(frame, *a, **kw)
        t = time.perf_counter()
        if isinstance(frame, rtc.VideoFrame):
            rec.image(t, lambda: np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 4)[..., :3])
        elif isinstance(frame, rtc.AudioFrame):
            rec.audio(t, frame.samples_per_channel)
        return out

    runner.av_sync.push = noted
    await runner.start()
    segments = [0]

    async def start(i):
        segments[0] += 1

    async def chunk(pcm, rate):
        await queue.capture_frame(rtc.AudioFrame(pcm.tobytes(), rate, 1, pcm.size))

    async def stop(i):
        queue.flush()

    async def cut(i):
        queue.flush()                                 # the agent's order (generation.py): flush, then clear
        queue.clear_buffer()

    rss = asyncio.ensure_future(watch_rss(rec))
    try:
        await speak(turns, rec, start, chunk, stop, cut, owed=lambda: len(finished_ev) < segments[0])
        await asyncio.sleep(1.0)
        stats = gen.session.stats()
    finally:
        rss.cancel()
        await runner.aclose()
        await gen.aclose()
    return rec, {"session_stats": stats, "segments": segments[0], "playback_finished": finished_ev}


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, run in report["runs"].items():
        mins = [c["minute"] for c in run["clock"]]
        ax[0].plot(mins, [c["video_minus_wall_ms"] for c in run["clock"]], marker=".", label=name)
        ax[1].plot(mins, [c["fps"] for c in run["clock"]], marker=".", label=name)
    ax[0].set(xlabel="minute", ylabel="video time - wall time (ms)", title="drift")
    ax[1].set(xlabel="minute", ylabel="frames per second", title="delivered")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bots", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of each run (default 30)")
    ap.add_argument("--only", choices=("pipecat", "livekit"), action="append", help="run only these")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    import torch

    from engine.demo_world.probe_measure import ProbeMeasure
    from engine.session import AvatarEngine
    torch.set_num_threads(1)
    engine = AvatarEngine("demo")
    probe = ProbeMeasure()

    def mouth(images):
        return np.asarray(probe(np.stack(images))["mouth_open"]) if images else np.zeros(0)

    turns = script(args.minutes, args.seed)
    report = {"minutes": args.minutes, "fps": args.fps, "seed": args.seed, "tts_pace": TTS_PACE,
              "chunk_ms": CHUNK_MS, "runs": {}}
    for name in args.only or ("pipecat", "livekit"):
        print(f"[bots] {name}: {len(turns)} turns, {args.minutes:g} min", flush=True)
        t = time.perf_counter()
        rec, extra = asyncio.run((run_pipecat if name == "pipecat" else run_livekit)(engine, turns, args.fps))
        res = analyse(rec, turns, args.fps, mouth, paced=name == "livekit")
        if name == "livekit":
            fin = extra.pop("playback_finished")
            cut = [f for f in fin if f[2]]
            res["playback_finished"] = {"segments": extra.pop("segments"), "sent": len(fin), "interrupted": len(cut)}
        res.update(extra, wall_s=round(time.perf_counter() - t, 1))
        report["runs"][name] = res
        brief = {k: res[k] for k in ("fps_delivered", "first_talking_frame_ms", "av_offset_in_turn_ms", "gaps_ms",
                                     "interruption")}
        print(f"[bots] {name}: " + json.dumps(brief), flush=True)
    report["environment"] = {**environment(torch.device("cpu")), "load_average_after": list(os.getloadavg())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))
    plot(report, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
