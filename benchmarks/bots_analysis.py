"""benchmarks.bots' analysis of a recording: what an output showed and played, and when
(:func:`played_out` for a transport that plays its audio queue in real time), and the figures of
the run (:func:`analyse`)."""
from __future__ import annotations

import numpy as np

from benchmarks.av_sync import pct

__all__ = ["OUT_RATE", "KEEP_AFTER_CUT_S", "played_out", "analyse"]

OUT_RATE = 24000               # the integrations' output audio rate
KEEP_AFTER_CUT_S = 0.6         # images kept after a cut for the mouth reading


def played_out(events: list[tuple]) -> list[tuple]:
    """The events at the times an output transport that plays its audio queue in real time would
    show and play them (pipecat's: an image with ``sync_with_audio`` waits in the audio queue
    behind the audio sent before it): an event's time is when it was sent, or when the audio
    before it has played out, whichever is later; at a cut, what is queued to play after it is
    dropped (the transport clears its queues on the ``InterruptionFrame``). The service sends talking frames up to its
    ``lead_s`` early, so its send times alone would show bursts and pauses no viewer sees."""
    out, free = [], -np.inf
    for kind, t, payload in events:
        if kind == "cut":           # the InterruptionFrame follows: the transport drops what it has queued
            tail = out[-200:]
            out[-200:] = [e for e in tail if not (e[0] in ("img", "aud") and e[1] > t)]
            free = t
        elif kind in ("img", "aud"):
            t = max(t, free)
            if kind == "aud":
                free = t + payload / OUT_RATE
        out.append((kind, t, payload))
    return out


def analyse(rec, turns, fps: float, mouth_fn, *, paced: bool = True) -> dict:
    """The run's figures (``benchmarks.bots``' docstring) from a ``Recorder`` of it, its ``Turn``s
    and ``mouth_fn`` (images → the mouth reading, 0 closed .. 1 open). ``paced``: the recorded times are the output's own (LiveKit's synchronizer); else they are
    send times, and :func:`played_out` gives the output's."""
    ev = rec.events if paced else played_out(rec.events)
    imgs = [(i, e) for i, e in enumerate(ev) if e[0] == "img"]
    t_img = np.array([e[1] for _, e in imgs])
    talking = np.zeros(len(imgs), bool)
    audio_of = np.zeros(len(imgs), int)
    pos = {idx: j for j, (idx, _) in enumerate(imgs)}
    last = None
    for idx, e in enumerate(ev):
        if e[0] == "img":
            last = pos[idx]
        elif e[0] == "aud" and last is not None:
            talking[last] = True
            audio_of[last] += e[2]
    per_frame = OUT_RATE / fps
    marks = {(e[0], e[2]): e[1] for e in ev if e[0] in ("start", "cut", "end")}

    ttff, offsets, rests, tails, at_cut = [], [], [], [], []
    stored = [(t_img[j], e[2]) for j, (_, e) in enumerate(imgs) if e[2] is not None]
    # the references: the sampled frames away from cuts (right after one, frames made before it
    # still show an open mouth, without their audio, and would read as "idle")
    cuts = np.array([e[1] for e in ev if e[0] == "cut"])
    near_cut = lambda t: bool(cuts.size) and bool(np.any((t >= cuts) & (t <= cuts + 2 * KEEP_AFTER_CUT_S)))  # noqa: E731
    ref = [(j, e[2]) for j, (_, e) in enumerate(imgs) if e[2] is not None and not near_cut(t_img[j])]
    idle_ref = [im for j, im in ref if not talking[j]]
    talk_ref = [im for j, im in ref if talking[j]]
    m_idle, m_talk = mouth_fn(idle_ref[:400]), mouth_fn(talk_ref[:400])
    rest = float(np.percentile(m_idle, 95) + 0.1 * (np.percentile(m_talk, 95) - np.percentile(m_idle, 95)))
    aud = [(e[1], e[2]) for e in ev if e[0] == "aud"]
    t_aud = np.array([a[0] for a in aud])
    n_aud = np.array([a[1] for a in aud])
    for i, turn in enumerate(turns):
        t0 = marks.get(("start", i))
        if t0 is None:
            continue
        t1 = marks.get(("cut", i), marks.get(("end", i), t0 + 60))
        sel = np.flatnonzero((t_img >= t0) & (t_img <= t1) & talking)
        if sel.size:
            ttff.append((t_img[sel[0]] - t0) * 1e3)
            cum = np.concatenate([[0], np.cumsum(audio_of[sel])[:-1]])
            offsets.append(float(np.abs(cum / OUT_RATE - np.arange(sel.size) / fps).max() * 1e3))
        if ("cut", i) in marks:
            tc = marks[("cut", i)]
            after = [(t, im) for t, im in stored if tc < t <= tc + KEEP_AFTER_CUT_S]
            if after:
                m = mouth_fn([im for _, im in after])
                hit = np.flatnonzero(m <= rest)
                rests.append(float((after[hit[0]][0] - tc) * 1e3) if hit.size else None)
                at_cut.append(float(m[0]))
            late = np.flatnonzero(t_aud > tc)
            nxt = marks.get(("start", i + 1), np.inf)
            late = late[t_aud[late] < nxt]
            tails.append({"last_ms": float((t_aud[late[-1]] - tc) * 1e3) if late.size else 0.0,
                          "audio_ms": float(n_aud[late].sum() / OUT_RATE * 1e3)})
    gaps = np.diff(t_img)
    # the clock: frames *sent* against the wall (a transport's drops at a cut are not the sender's drift)
    t_sent = np.array([e[1] for e in rec.events if e[0] == "img"])
    minute = []
    for k in range(int((t_img[-1] - t_img[0]) // 60) + 1):
        sel = (t_img - t_img[0] >= 60 * k) & (t_img - t_img[0] < 60 * (k + 1))
        n_before = int(np.sum(t_sent - t_sent[0] < 60 * k))
        minute.append({"minute": k, "fps": float(sel.sum() / 60.0),
                       "video_minus_wall_ms": float((n_before / fps - 60 * k) * 1e3)})
    done = [r for r in rests if r is not None]
    return {
        "turns": len(turns), "cuts": sum(t.cut_s is not None for t in turns),
        "frames": len(t_img), "talking_frames": int(talking.sum()),
        "fps_delivered": float((len(t_img) - 1) / (t_img[-1] - t_img[0])),
        "first_talking_frame_ms": {"p50": pct(ttff, 50), "p95": pct(ttff, 95), "max": pct(ttff, 100), "n": len(ttff)},
        "av_offset_in_turn_ms": {"max": pct(offsets, 100), "p95": pct(offsets, 95)},
        "talking_frames_with_other_audio_length": int(np.sum(audio_of[talking] != round(per_frame))),
        "clock": minute,
        "gaps_ms": {"max": float(gaps.max() * 1e3), "p99": float(np.percentile(gaps, 99) * 1e3),
                    "stalls_over_3_frames": int(np.sum(gaps > 3 / fps))},
        "interruption": {"cut_to_mouth_at_rest_ms": {"p50": pct(done, 50), "p95": pct(done, 95), "max": pct(done, 100)},
                         "not_at_rest_within_ms": [KEEP_AFTER_CUT_S * 1e3, sum(r is None for r in rests)],
                         "mouth_first_frame_after_cut_median": pct(at_cut, 50), "rest_threshold": rest,
                         "audio_after_cut_ms": {"max": pct([t["audio_ms"] for t in tails], 100),
                                                "last_after_cut_ms_max": pct([t["last_ms"] for t in tails], 100)}},
        "rss_mb": [round(r, 1) for _, r in rec.rss],
    }
