"""Audio → pixels latency measured from outside, side by side in one run.

Each configuration gets its own server process on 127.0.0.1 and the same client (an aiortc peer in
this process, ``benchmarks.loopback.stream_run``): its microphone plays silence with tone bursts,
and a burst's latency is the time from handing the 20 ms packet holding its onset to the sender
until the client has *decoded* the first frame that changed (``benchmarks.loopback.analyse``:
against the silent face rendered offline for StyleCast, against the floor's silent frame).

* ``floor``: a zero-cost server of stock aiortc (``benchmarks.latency_floor``): the transport's
  own latency, the stock audio jitter buffer included;
* ``stylecast`` at 25, 30 and 50 fps: ``streaming.server`` with the demo generator and the idle
  driver without its speech priors (``benchmarks.loopback.PROBE_DRIVER``: its loudness envelope
  opens the mouth on a tone, and nothing else answers the audio; the trained LSTM answers speech);
* ``barge-in`` (25 fps): a long tone is cut off, and on every other cut the client sends
  ``{"type": "interrupt"}``: the time from the cut to the first decoded frame with the mouth at
  rest, with and without the message;
* ``overload`` (25 fps): synthesis padded to ``--overload`` frame intervals (default 2): latency
  must stay bounded because frames are dropped, not queued.

Per stage: the server's own stats (stages, audio arrival → frame published, ``latency_ms``) and
the offline algorithmic part (``benchmarks.loopback.algorithmic_latency``). JSON and a plot go to
``benchmarks/results/``. ``--browser`` adds the same probes from headless Chromium
(``benchmarks.latency_browser``).

    python -m benchmarks.latency                        # ~4 min on 2 cores
    python -m benchmarks.latency --only floor@25,stylecast@25 --seconds 10
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.av_sync import pct
from benchmarks.latency_probes import (
    burst_track,
    cut_track,
    interrupt_script,
    note,
    refs_for,
    rest_times,
    serve_stylecast,
    server,
)
from benchmarks.loopback import algorithmic_latency, analyse, frame_diffs, stream_run

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "latency.json"
#: the issue's goals on this CPU (ms)
GOALS = {"aiortc_p50": 110, "aiortc_p95": 140, "browser_p50": 130, "barge_in_p95": 100}

# -- runs -------------------------------------------------------------------------------------------

def _server_part(run: dict) -> dict | None:
    st = run["stats"][-1] if run["stats"] else None
    if not st:
        return None
    return {k: st.get(k) for k in ("fps", "latency_ms", "arrival_to_frame_ms", "stages_ms", "dropped", "frames")}


async def measure(args, mode: str, fps: float, overload: float = 0.0, marker: bool = False) -> dict[str, Any]:
    pcm, starts = burst_track(args.seconds, args.bursts)
    async with server(args, mode, fps, overload) as (url, health):
        run = await stream_run(url, pcm, args.seconds + 1.5, marker_video=marker)
    e2e = analyse(run, refs_for(args, mode, fps, health["resolution"]), starts, fps)
    e2e["server"] = _server_part(run)
    e2e["fps"] = fps
    e2e["client"] = "aiortc, marker-bit video buffer" if marker else "aiortc, stock"
    return e2e


async def measure_barge_in(args) -> dict[str, Any]:
    fps = 25.0
    pcm, cuts = cut_track(args.trials)
    script, sent = interrupt_script(cuts)
    seconds = (cuts[-1] * 0.02) + 2.0
    async with server(args, "stylecast", fps) as (url, health):
        run = await stream_run(url, pcm, seconds, script=script)
    stamps, times, diffs = frame_diffs(run, refs_for(args, "stylecast", fps, health["resolution"]))
    sent_at = run["sent_at"]
    quiet = diffs[times < sent_at[cuts[0] - 50]] if len(sent_at) > cuts[0] else diffs[:25]
    threshold = max(15.0, 1.5 * float(np.percentile(quiet, 95)))
    by_trial = dict(sent)
    with_msg = rest_times(stamps, times, diffs, threshold, [t for _, t in sent])
    without = rest_times(stamps, times, diffs, threshold,
                         [sent_at[n] for j, n in enumerate(cuts) if j not in by_trial and n < len(sent_at)])
    acks = [t for t, m in run["events"] if m.get("type") == "interrupt"]
    ack_ms = [round((a - t) * 1e3, 1) for (_, t), a in zip(sent, acks)]
    ok_with = [x for x in with_msg if x is not None]
    ok_without = [x for x in without if x is not None]
    return {"fps": fps, "threshold": threshold, "trials": len(cuts),
            "interrupt_to_rest_ms": {"p50": pct(ok_with, 50), "p95": pct(ok_with, 95), "all": with_msg},
            "cut_without_interrupt_to_rest_ms": {"p50": pct(ok_without, 50), "p95": pct(ok_without, 95),
                                                 "all": without},
            "interrupt_ack_ms": ack_ms, "server": _server_part(run)}


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, v["latencies_ms"]) for k, v in res["runs"].items() if v.get("latencies_ms")]
    rows += [(f"Chromium {k}", v["latencies_ms"]) for k, v in (res.get("browser") or {}).items()
             if v.get("latencies_ms")]
    b = res.get("barge_in")
    if b:
        rows += [("barge-in: interrupt", [x for x in b["interrupt_to_rest_ms"]["all"] if x is not None]),
                 ("barge-in: cut only", [x for x in b["cut_without_interrupt_to_rest_ms"]["all"] if x is not None])]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(rows)))
    for i, (_, xs) in enumerate(rows):
        ax.scatter(xs, np.full(len(xs), i) + np.linspace(-0.15, 0.15, len(xs)), s=12)
        if xs:
            ax.plot([np.median(xs)] * 2, [i - 0.3, i + 0.3], "k-")
    ax.axvline(GOALS["aiortc_p50"], color="g", ls="--", lw=0.8, label="goal p50 (aiortc)")
    ax.axvline(GOALS["aiortc_p95"], color="r", ls="--", lw=0.8, label="goal p95 (aiortc)")
    ax.set_yticks(range(len(rows)), [k for k, _ in rows])
    ax.set_xlabel("ms (audio onset or cut → decoded frame)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(res: dict) -> str:
    lines = [f"audio->pixels from outside, 127.0.0.1, {os.cpu_count()} CPUs, load {res['load_average'][0]:.2f}",
             f"{'run':<24}{'p50':>7}{'p95':>7}{'max':>7}{'seen':>8}{'fps':>7}{'skipped':>9}"]
    runs = {**res["runs"], **{f"Chromium {k}": v for k, v in (res.get("browser") or {}).items()}}
    for k, v in runs.items():
        a = v["audio_to_pixels_ms"]
        f = lambda x: f"{x:7.0f}" if x is not None else "      -"    # noqa: E731
        lines.append(f"{k:<24}{f(a['p50'])}{f(a['p95'])}{f(a['max'])}{v['detected']:>4}/{v['bursts']:<3}"
                     f"{v['fps_delivered'] or 0:7.1f}{v['frames_skipped']:>9}")
    b = res.get("barge_in")
    if b:
        i, c = b["interrupt_to_rest_ms"], b["cut_without_interrupt_to_rest_ms"]
        lines.append(f"barge-in, interrupt -> mouth at rest p50/p95: {i['p50']} / {i['p95']} ms; "
                     f"tone cut only: {c['p50']} / {c['p95']} ms")
    for k, v in res["runs"].items():
        s = v.get("server")
        if s and s.get("stages_ms"):
            st = ", ".join(f"{n} {x['p50']:.1f}" for n, x in sorted(s["stages_ms"].items()) if x.get("p50") is not None)
            atf = (s.get("arrival_to_frame_ms") or {}).get("p50")
            lines.append(f"  {k}: server p50 ms: {st}; audio arrival -> published {atf}; "
                         f"latency_ms {s.get('latency_ms')}")
    return "\n".join(lines)


async def main_async(args) -> dict:
    from streaming.ice import loopback_candidates

    wanted = set(args.only.split(",")) if args.only else None

    def chosen(name: str) -> bool:
        return not wanted or any(name == w or name.startswith((w + "@", w + " ")) for w in wanted)
    ov = f"overload x{args.overload:g}@25"
    plan = [("floor@25", "floor", 25.0, 0.0, False), ("stylecast@25", "stylecast", 25.0, 0.0, False),
            ("stylecast@30", "stylecast", 30.0, 0.0, False), ("stylecast@50", "stylecast", 50.0, 0.0, False),
            ("floor@50", "floor", 50.0, 0.0, False), (ov, "stylecast", 25.0, args.overload, False),
            ("stylecast@25 marker", "stylecast", 25.0, 0.0, True), (ov + " marker", "stylecast", 25.0, args.overload, True)]
    runs = {}
    with loopback_candidates():
        for name, mode, fps, overload, marker in plan:
            if not chosen(name):
                continue
            note(f"{name}: {args.seconds:g} s, {args.bursts} bursts")
            runs[name] = await measure(args, mode, fps, overload, marker)
        barge = None
        if chosen("barge-in"):
            note(f"barge-in: {args.trials} tone cuts, every other one with an interrupt")
            barge = await measure_barge_in(args)
    browser = None
    if args.browser:
        from benchmarks.latency_browser import measure_browser
        rows = [(n, m, f) for n, m, f, _, marker in plan if not marker and not _ and chosen(n)]
        browser = await measure_browser(args, rows) if rows else None
    alg = {}
    for fps in sorted({v["fps"] for k, v in runs.items() if k.startswith("stylecast")}):
        alg[f"{fps:g}"] = algorithmic_latency(argparse.Namespace(**{**vars(args), "fps": fps}))
    from benchmarks.loopback import _environment
    return {"benchmark": "latency", "goals_ms": GOALS,
            "settings": {"generator": args.generator, "resolution": args.resolution, "device": args.device,
                         "seconds": args.seconds, "bursts": args.bursts, "trials": args.trials,
                         "overload": args.overload},
            "environment": _environment(args.device), "load_average": os.getloadavg(),
            "runs": runs, "barge_in": barge, "browser": browser, "algorithmic": alg}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="demo")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--device", default="cpu", help="synthesis device of the StyleCast server (default cpu)")
    p.add_argument("--seconds", type=float, default=20.0, help="length of each burst run (default 20)")
    p.add_argument("--bursts", type=int, default=12, help="tone bursts per run (default 12)")
    p.add_argument("--trials", type=int, default=12, help="tone cuts of the barge-in run (default 12)")
    p.add_argument("--overload", type=float, default=2.0,
                   help="synthesis padded to this many frame intervals in the overload run (default 2)")
    p.add_argument("--only", default="", help="comma-separated runs: floor@25, stylecast@30, ... or floor, "
                                              "stylecast, overload, barge-in (default: all)")
    p.add_argument("--browser", action="store_true", help="also measure from headless Chromium")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--serve", choices=("floor", "stylecast"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fps", type=float, default=25.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve == "floor":
        from benchmarks.latency_floor import run_floor_server
        run_floor_server(args.port, args.fps, args.resolution or 128)
        return 0
    if args.serve == "stylecast":
        serve_stylecast(args)
        return 0
    res = asyncio.run(main_async(args))
    print(format_table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    plot(res, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
