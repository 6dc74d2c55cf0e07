"""Lip-sync, identity drift and jitter of a driver, measured with the demo world's ground truth.

For each held-out utterance (``engine.demo_world.talking``: espeak-ng audio + the mouth track
from espeak-ng's own phoneme timing) the audio is pushed through an ``AvatarSession`` exactly as
live audio is; every rendered frame is read by the mouth probe (``engine.demo_world.probes``).
Reported per driver:

* ``corr``: Pearson correlation of the probe's mouth opening with the ground-truth track, at lag 0,
  over all frames with each utterance centred on its own mean (utterance i is spoken by identity
  ``100 + i``; a face's resting mouth reads differently on the probe, which is not lip-sync);
  ``corr_raw`` without the centring, ``corr_median_utterance`` the median per utterance;
* ``best_lag`` / ``best_corr``: the lag (frames, positive = the video is late) in ±``max_lag``
  with the highest correlation;
* controls: the ``idle`` baseline driver, and ``shuffled`` (the driver fed another utterance's
  audio, scored against this utterance's track);
* ``drift``: identity-probe values over a long stream of concatenated speech (default 1 hour):
  the slope per hour of each identity value relative to its spread — no growth means no drift;
* ``jitter``: mean absolute frame-to-frame change of the probe outputs over silent stretches.

``--mic-rate 48000`` pushes the audio as a microphone at that rate delivers it (upsampled with
libsoxr VHQ): with ``--features native`` (default) the session computes its features at that
rate; ``--features resampled`` first runs it through the streaming 48 → 16 kHz libsoxr HQ
resampler in 20 ms chunks, which is what the live path did before native-rate features.

    # the shipped demo generator, its trained LSTM vs the idle baseline, the shipped probes
    python -m engine.demo_world.talking --out talking --n 300
    python -m benchmarks.lipsync --data talking/holdout [--drift-minutes 60]

    # another driver / generator
    python -m benchmarks.lipsync --data talking/holdout --driver lstm:motion.safetensors \\
        --generator G.safetensors --directions directions.json --probes probes.safetensors

Writes benchmarks/results/lipsync.json and lipsync.png (``--out-dir``).
"""
from __future__ import annotations

import argparse
import json
import wave
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from engine.avatar import ASSETS
from engine.demo_world.probes import load_probes
from engine.faces.landmark_measure import LandmarkMeasure
from engine.session import AvatarEngine, AvatarSession

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"


# -- metrics ---------------------------------------------------------------------------------------
def lagged_corr(pred: np.ndarray, truth: np.ndarray, max_lag: int = 5) -> dict[int, float]:
    """Correlation of pred[t] with truth[t − lag] for lag in −max_lag..max_lag (lag > 0: pred late)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    n = min(pred.size, truth.size)
    out = {}
    for lag in range(-max_lag, max_lag + 1):
        a = pred[max(lag, 0):n + min(lag, 0)]
        b = truth[max(-lag, 0):n - max(lag, 0)]
        out[lag] = float(np.corrcoef(a, b)[0, 1]) if a.size > 2 and a.std() > 1e-9 and b.std() > 1e-9 else 0.0
    return out


def best_lag(pred: np.ndarray, truth: np.ndarray, max_lag: int = 5) -> tuple[int, float]:
    c = lagged_corr(pred, truth, max_lag)
    lag = max(c, key=lambda k: (c[k], -abs(k)))
    return lag, c[lag]


def jitter(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean |v[t] − v[t−1]| over consecutive frames that are both in ``mask`` (e.g. silence)."""
    v = np.asarray(values, np.float64)
    m = np.asarray(mask, bool) & np.isfinite(v)        # frames where the measure read nothing are left out
    both = m[1:] & m[:-1]
    return float(np.abs(np.diff(v))[both].mean()) if both.any() else 0.0


def drift(values: np.ndarray, fps: float) -> dict[str, float]:
    """Linear trend of a value over time: slope per hour ÷ its standard deviation, and the ratio of
    the last tenth's mean to the first tenth's (relative to the spread)."""
    v = np.asarray(values, np.float64)
    t_h = np.arange(v.size) / fps / 3600.0
    sd = float(v.std()) or 1.0
    slope = float(np.polyfit(t_h, v, 1)[0]) if v.size > 2 else 0.0
    k = max(1, v.size // 10)
    return {"slope_per_hour_over_sd": slope / sd, "last_minus_first_over_sd": float(v[-k:].mean() - v[:k].mean()) / sd}


# -- running a driver ------------------------------------------------------------------------------
def read_utterances(folder: Path, fps: Optional[float] = None) -> list[dict]:
    """[{name, samples int16, rate, track, fps}] of a talking-data folder (sorted by name); with
    ``fps`` the ground-truth track at that frame rate, from the utterance's phoneme timeline
    (``engine.demo_world.speech.mouth_track``, as the talking data made it)."""
    out = []
    for js in sorted(Path(folder).glob("utt*.json")):
        rec = json.loads(js.read_text())
        stem = js.with_suffix("")
        with wave.open(f"{stem}.wav") as f:
            pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16)
            rate = f.getframerate()
        track = np.load(f"{stem}.mouth.npy")
        if fps is not None and abs(fps - float(rec["fps"])) > 1e-9:
            from engine.demo_world.speech import Phoneme, Utterance, mouth_track

            utt = Utterance(pcm, rate, tuple(Phoneme(n, int(a), int(b)) for n, a, b in rec["phonemes"]),
                            rec.get("text", ""), rec.get("voice", ""), int(rec.get("rate_wpm", 0)), int(rec.get("pitch", 0)))
            track = mouth_track(utt, fps)
        out.append({"name": stem.name, "samples": pcm, "rate": rate, "track": track,
                    "fps": float(rec["fps"]) if fps is None else float(fps)})
    if not out:
        raise SystemExit(f"{folder}: no utterances (uttNNNNN.json/.wav/.mouth.npy); make them with "
                         "python -m engine.demo_world.talking")
    return out


def at_mic_rate(pcm: np.ndarray, rate: int, mic_rate: int, features: str) -> dict:
    """An utterance as a microphone at ``mic_rate`` delivers it (float32, full scale 1), pushed at
    ``mic_rate`` (``native``) or after the streaming libsoxr HQ resampler to 16 kHz in 20 ms chunks
    (``resampled``: what the live path fed its 16 kHz features before)."""
    import soxr

    x = soxr.resample(pcm.astype(np.float32) / 32768, rate, mic_rate, quality="VHQ").astype(np.float32)
    if features == "native":
        return {"samples": x, "rate": mic_rate}
    rs = soxr.ResampleStream(mic_rate, 16000, 1, dtype="float32", quality="HQ")
    step = mic_rate // 50
    parts = [rs.resample_chunk(x[i:i + step]) for i in range(0, x.size, step)]
    parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    return {"samples": np.concatenate(parts).astype(np.float32), "rate": 16000}


def render_measure(engine, driver: str, audio: np.ndarray, rate: int, fps: float,
                   measure: Callable[[np.ndarray], Mapping[str, np.ndarray]], identity: int = 0,
                   batch: int = 64) -> dict[str, np.ndarray]:
    """Push ``audio`` through a fresh session (20 ms chunks, then enough silence to flush the
    lookahead), measure every frame; returns attribute → [frames]."""
    s = AvatarSession(engine, fps=fps, identity=identity, driver=driver)
    frames, values = [], {}

    def flush():
        if frames:
            for k, v in measure(np.stack(frames)).items():
                values.setdefault(k, []).append(np.asarray(v, np.float64))
            frames.clear()
    chunk = rate // 50
    n_frames = int(np.ceil(audio.size / rate * fps - 1e-9))
    got, i = 0, 0
    limit = audio.size + rate                            # at most 1 s of trailing silence
    while got < n_frames and i < limit:
        piece = audio[i:i + chunk]
        if piece.size < chunk:                           # trailing silence releases the lookahead frames
            piece = np.concatenate([piece, np.zeros(chunk - piece.size, piece.dtype)])
        s.push_audio(piece, rate)
        i += chunk
        while got < n_frames and (f := s.next_frame()) is not None:
            frames.append(f.image)
            got += 1
            if len(frames) >= batch:
                flush()
    flush()
    s.close()
    return {k: np.concatenate(v)[:n_frames] for k, v in values.items()}


def evaluate(engine, drivers: Sequence[str], utterances: list[dict], measure, *, max_lag: int = 5,
             first_identity: int = 100, identity=None, traces: Optional[dict] = None) -> dict:
    """Per driver: lag-0 and best-lag correlation of the mouth probe with the ground truth, pooled
    over utterances, plus the shuffled-audio control of the first driver. Utterance i is spoken by
    identity seed ``first_identity + i``, or by ``identity`` (a seed or an identity file) when given.
    ``traces``, when given, receives the first utterance's ground truth and each driver's probe
    readings."""
    out: dict = {}
    mouth: dict[str, list] = {}
    for d in drivers:
        mouth[d] = [render_measure(engine, d, u["samples"], u["rate"], u["fps"], measure,
                                   identity=first_identity + i if identity is None else identity)["mouth_open"]
                    for i, u in enumerate(utterances)]
    if traces is not None and utterances:
        traces["truth"] = utterances[0]["track"]
        traces["fps"] = utterances[0]["fps"]
        traces["name"] = utterances[0]["name"]
        for d in drivers:
            traces[d] = mouth[d][0]
    truth = [u["track"][:m.size] for u, m in zip(utterances, mouth[drivers[0]])]
    controls = {d: mouth[d] for d in drivers}
    # shuffled: utterance i's rendering scored against utterance i+1's track (cut to the shorter)
    shuffled = [m for m in mouth[drivers[0]]]
    shuffled_truth = [utterances[(i + 1) % len(utterances)]["track"] for i in range(len(utterances))]
    for name, preds, truths in [*((d, controls[d], truth) for d in drivers),
                                ("shuffled", shuffled, shuffled_truth)]:
        n = [min(p.size, t.size) for p, t in zip(preds, truths)]
        # each utterance centred on its own mean: a face's resting mouth reads differently on the probe,
        # and that offset between identities is not lip-sync (corr_raw keeps it)
        p = np.concatenate([a[:k] - a[:k].mean() for a, k in zip(preds, n)])
        t = np.concatenate([b[:k] - b[:k].mean() for b, k in zip(truths, n)])
        p_raw = np.concatenate([a[:k] for a, k in zip(preds, n)])
        t_raw = np.concatenate([b[:k] for b, k in zip(truths, n)])
        lag, c = best_lag(p, t, max_lag)
        per_utt = [lagged_corr(a[:k], b[:k], 0)[0] for a, b, k in zip(preds, truths, n)]
        out[name] = {"corr": lagged_corr(p, t, 0)[0], "best_lag": lag, "best_corr": c, "frames": int(p.size),
                     "corr_raw": lagged_corr(p_raw, t_raw, 0)[0], "corr_median_utterance": float(np.median(per_utt))}
    return out


class LandmarkReader:
    """The landmark face measure as the benchmark's reader: ``mouth_open`` (inner-lip gap /
    inter-ocular distance) and the other landmark numbers per frame; with ``embed_every`` N, also
    ``identity_distance``: dlib's embedding distance of every N-th frame to the first frame read
    (NaN in between; 0.6 = another person)."""

    def __init__(self, embed_every: int = 0, aligned="auto"):
        self.measure = LandmarkMeasure(aligned=aligned)
        self.embed_every = int(embed_every)
        self._seen = 0
        self._first = None

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        out = {k: v for k, v in self.measure(images).items() if k != "found"}
        if self.embed_every:
            pick = [i for i in range(len(images)) if (self._seen + i) % self.embed_every == 0]
            dist = np.full(len(images), np.nan)
            if pick:
                emb = self.measure.embed(images[pick])
                if self._first is None:
                    self._first = emb[0]
                dist[pick] = np.linalg.norm(emb - self._first, axis=1)
            out["identity_distance"] = dist
        self._seen += len(images)
        return out


def plot(report: dict, traces: dict, path: Path) -> None:
    """Correlations per driver (bars) and the first utterance's tracks, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["lipsync"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1, 2.6]})
    names = list(rows)
    ax0.bar(range(len(names)), [rows[n]["corr"] for n in names], color=["C0", "C1", "C7", "C2"][:len(names)])
    ax0.axhline(0.8, color="k", lw=0.8, ls="--")
    ax0.set_xticks(range(len(names)), [n.split(":")[0].replace("lstm", "trained LSTM") for n in names])
    ax0.set_ylabel("corr(mouth probe, ground truth)")
    ax0.set_ylim(min(-0.1, *(rows[n]["corr"] for n in names)), 1.0)
    ax0.set_title("held-out voice, lag 0")
    t = np.arange(traces["truth"].size) / traces["fps"]
    z = lambda v: (v - v.mean()) / (v.std() + 1e-9)            # noqa: E731
    ax1.plot(t, z(traces["truth"]), "k", lw=2, label="ground truth (espeak-ng phoneme timing)")
    for i, d in enumerate(n for n in traces if n not in ("truth", "fps", "name")):
        ax1.plot(t[:traces[d].size], z(traces[d][:t.size]), color=f"C{i}", lw=1.2,
                 label=f"probe on frames: {d.split(':')[0].replace('lstm', 'trained LSTM')}")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("mouth opening (z-scored)")
    ax1.set_title(f"utterance {traces['name']}")
    ax1.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lipsync", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="talking-data folder of held-out utterances")
    p.add_argument("--probes", type=Path, default=ASSETS / "demo_probes.safetensors",
                   help="probes file (python -m engine.demo_world.train_probes; default: the shipped demo probes)")
    p.add_argument("--driver", default="default",
                   help="driver under test (default: the demo generator's trained LSTM; lstm:PATH ...); "
                        "idle is the baseline")
    p.add_argument("--directions", type=Path, default=None,
                   help="direction set of the generator (default: the engine's, for demo the shipped one)")
    p.add_argument("--generator", default="demo")
    p.add_argument("--measure", choices=("probes", "landmarks"), default="probes",
                   help="what reads the frames: the demo world's probes (default) or dlib landmarks (any "
                        "face generator; the faces extra), whose identity drift is the embedding distance")
    p.add_argument("--no-plot", action="store_true", help="skip lipsync.png")
    p.add_argument("--limit", type=int, default=None, help="at most this many utterances")
    p.add_argument("--drift-minutes", type=float, default=60.0, help="length of the drift stream (0: skip)")
    p.add_argument("--max-lag", type=int, default=5)
    p.add_argument("--identity", default=None,
                   help="every utterance spoken by this face: a seed or an identity .npz from engine.invert "
                        "(default: utterance i by seed 100 + i)")
    p.add_argument("--fps", type=float, default=None,
                   help="video frame rate of the sessions (default: the data's); the ground truth is recomputed "
                        "at it from each utterance's phoneme timeline")
    p.add_argument("--mic-rate", type=int, default=None,
                   help="push the utterances at this rate (resampled with libsoxr VHQ; default: their own)")
    p.add_argument("--features", choices=("native", "resampled"), default="native",
                   help="with --mic-rate: features at that rate, or after the live 16 kHz resampler")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = p.parse_args(argv)
    identity = None if args.identity is None else (int(args.identity) if args.identity.isdigit() else args.identity)

    aligned = "demo" if args.generator == "demo" else "auto"    # the face box where the detector misses
    if args.measure == "landmarks":
        read = LandmarkReader(aligned=aligned)
    else:
        read = load_probes(args.probes).predict
    engine = AvatarEngine(args.generator, directions=args.directions, log=print)
    utts = read_utterances(args.data, args.fps)[: args.limit]
    if args.mic_rate:
        utts = [dict(u, **at_mic_rate(u["samples"], u["rate"], args.mic_rate, args.features)) for u in utts]
    driver = engine.default_driver if args.driver == "default" else args.driver
    drivers = [driver] + (["idle"] if driver != "idle" else [])
    traces: dict = {}
    report = {"generator": args.generator, "driver": driver, "utterances": len(utts), "measure": args.measure,
              "identity": args.identity, "fps": utts[0]["fps"], "mic_rate": args.mic_rate, "features": args.features if args.mic_rate else None,
              "lipsync": evaluate(engine, drivers, utts, read, max_lag=args.max_lag, identity=identity, traces=traces)}
    fps = utts[0]["fps"]
    if args.drift_minutes > 0:
        need = int(args.drift_minutes * 60 * utts[0]["rate"])
        stream = np.concatenate([u["samples"] for u in utts])
        stream = np.tile(stream, need // stream.size + 1)[:need]
        if args.measure == "landmarks":     # identity: embedding distance to the first frame, once a second
            vals = render_measure(engine, driver, stream, utts[0]["rate"], fps, LandmarkReader(int(round(fps)), aligned),
                                  identity=identity or 0)
            d = vals["identity_distance"][np.isfinite(vals["identity_distance"])]
            report["drift"] = {"minutes": args.drift_minutes, "identity_distance_to_first": {
                "mean": float(d.mean()), "max": float(d.max()), "last_tenth_mean": float(d[-max(1, d.size // 10):].mean()),
                "slope_per_hour": float(np.polyfit(np.arange(d.size) / 3600.0, d, 1)[0]) if d.size > 2 else 0.0}}
        else:
            vals = render_measure(engine, driver, stream, utts[0]["rate"], fps, read, identity=identity or 0)
            ident = {k: drift(v, fps) for k, v in vals.items() if k not in ("mouth_open", "blink", "mouth_width", "smile")}
            report["drift"] = {"minutes": args.drift_minutes, "per_value": ident,
                               "max_abs_slope_per_hour_over_sd": max(abs(d["slope_per_hour_over_sd"])
                                                                     for d in ident.values())}
    silent = render_measure(engine, driver, np.zeros(int(10 * utts[0]["rate"]), np.int16), utts[0]["rate"], fps,
                            read, identity=identity or 0)
    report["jitter_silence"] = {k: jitter(v, np.ones(v.size, bool)) for k, v in silent.items()}
    for name, r in report["lipsync"].items():
        print(f"{name:>24}: corr {r['corr']:+.3f}, best lag {r['best_lag']:+d} frames (corr {r['best_corr']:+.3f}), "
              f"{r['frames']} frames")
    if "drift" in report and args.measure == "landmarks":
        d = report["drift"]["identity_distance_to_first"]
        print(f"drift over {args.drift_minutes:g} min: identity embedding distance to the first frame mean "
              f"{d['mean']:.3f}, max {d['max']:.3f} (0.6 = another person), slope {d['slope_per_hour']:+.3f} per hour")
    elif "drift" in report:
        print(f"drift over {args.drift_minutes:g} min: max |slope| {report['drift']['max_abs_slope_per_hour_over_sd']:.3f} "
              "identity-probe standard deviations per hour")
    print("jitter in silence (mean |frame-to-frame change|): "
          + ", ".join(f"{k} {v:.4f}" for k, v in report["jitter_silence"].items()
                        if k in ("mouth_open", "blink", "yaw", "head_yaw")))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "lipsync.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_plot:
        plot(report, traces, args.out_dir / "lipsync.png")
        print(f"wrote {args.out_dir / 'lipsync.json'} and lipsync.png")
    return report


if __name__ == "__main__":
    main()
