"""StepClock: video frames at any frame rate → the fixed-rate steps of a motion model that has its
own clock (``AudioLSTMConfig.step_hz``), and back.

A model with ``step_hz`` = r steps once per 1/r s whatever the video's frame rate: step s covers
the audio ``[E(s-1), E(s))`` with ``E(s) = round((s+1)·16000/r)`` (16 kHz samples), and its input
is the log-mel window a :class:`~engine.audio.features.FeatureStream` at ``fps = r`` emits for it
(the window's newest mel frame ends at ``E(s) + lookahead``). Training sees exactly these windows
(``frame_windows(..., fps=r)``) and the targets at the steps' centres.

At run time the session's feature stream runs at the video's fps and hands each video frame k a
window ending at ``t_end = S(k+1) + lookahead``. The clock keeps the mel frames those windows
bring (each overlaps the last), runs every step whose audio interval has ended by the frame's end
(``E(s) ≤ S(k+1)``: its window is then inside what has arrived), and gives the frame the model's
output at the frame's centre, linearly interpolated between the steps around it (the latest
step's output when the frame's centre is past it, which happens only when frames are shorter
than steps). The video frame waits for no more audio than a frame-stepped model would.

Times restart when the feature stream restarts (``t_end`` goes back, e.g. after an
interruption): the clock then starts again at step 0 with an empty history (mel frames before
the new start read as silence, ``LOG_FLOOR``, as at the start of a stream).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from engine.audio.features import HOP_LENGTH, LOG_FLOOR, WIN_LENGTH, round_half_up
from engine.audio.input import SAMPLE_RATE

__all__ = ["StepClock"]


class StepClock:
    """Mel history and step bookkeeping of one stream (times in 16 kHz samples).

    Args:
        step_hz: the model's step rate.
        fps: the video frame rate.
        lookahead_ms: the feature lookahead (the model's).
        window_frames, n_mels: the model's mel window.
    """

    def __init__(self, step_hz: float, fps: float, lookahead_ms: float, window_frames: int, n_mels: int):
        self.step_hz, self.fps = float(step_hz), float(fps)
        self.lookahead = round_half_up(float(lookahead_ms) * SAMPLE_RATE / 1000.0)
        self.window_frames, self.n_mels = int(window_frames), int(n_mels)
        self.reset()

    def reset(self) -> None:
        self._rows = np.zeros((0, self.n_mels), np.float32)   # mel frames [row0, row0 + len)
        self._row0 = 0
        self._t_end = -1
        self.next_step = 0
        self._outs: list[tuple[float, np.ndarray]] = []      # (centre, x) of the last steps

    def step_end(self, s: int) -> int:
        """E(s): where step s's audio interval ends."""
        return round_half_up((s + 1) * SAMPLE_RATE / self.step_hz)

    def _add(self, t_end: int, mel: np.ndarray) -> None:
        last = (t_end - WIN_LENGTH) // HOP_LENGTH                   # the window's newest mel frame
        first = last - self.window_frames + 1
        end = self._row0 + self._rows.shape[0]
        if not self._rows.shape[0] or first > end:                   # nothing to continue from
            self._rows, self._row0 = mel.copy(), first
        elif last >= end:
            self._rows = np.concatenate([self._rows, mel[end - first:]])
        keep = (self.step_end(self.next_step) + self.lookahead - WIN_LENGTH) // HOP_LENGTH - self.window_frames + 1
        if keep > self._row0:
            cut = min(keep - self._row0, self._rows.shape[0])
            self._rows, self._row0 = self._rows[cut:], self._row0 + cut

    def _window(self, s: int) -> np.ndarray:
        """Step s's mel window from the history (frames before the history: silence)."""
        last = (self.step_end(s) + self.lookahead - WIN_LENGTH) // HOP_LENGTH
        first = last - self.window_frames + 1
        out = np.full((self.window_frames, self.n_mels), LOG_FLOOR, np.float32)
        lo, hi = max(first, self._row0), min(last + 1, self._row0 + self._rows.shape[0])
        if hi > lo:
            out[lo - first:hi - first] = self._rows[lo - self._row0:hi - self._row0]
        return out

    def due(self, t_end: Optional[int], mel: Optional[np.ndarray]) -> np.ndarray:
        """The windows [n, window_frames, n_mels] of the steps that the video frame whose window
        ends at ``t_end`` makes due (maybe none); ``mel`` None: a silent frame 1/fps after the last."""
        if mel is None:
            t_end = max(self._t_end, self.lookahead) + round_half_up(SAMPLE_RATE / self.fps)
            mel = np.full((self.window_frames, self.n_mels), LOG_FLOOR, np.float32)
        elif t_end < self._t_end:                                    # the feature stream restarted
            self.reset()
        self._t_end = t_end
        frame_end = t_end - self.lookahead
        steps = []
        while self.step_end(self.next_step + len(steps)) <= frame_end:
            steps.append(self.next_step + len(steps))
        self._add(t_end, mel)
        wins = [self._window(s) for s in steps]
        return np.stack(wins) if wins else np.zeros((0, self.window_frames, self.n_mels), np.float32)

    def outputs(self, xs: np.ndarray) -> None:
        """The model's outputs [n, k] for the steps :meth:`due` returned, in order."""
        for x in xs:
            s = self.next_step
            start = self.step_end(s - 1) if s else 0
            self._outs.append((0.5 * (start + self.step_end(s)), np.asarray(x, np.float32)))
            self.next_step += 1
        del self._outs[:-max(2, int(np.ceil(self.step_hz / self.fps)) + 2)]

    def at_frame(self, k_dim: int) -> np.ndarray:
        """x [k] for the video frame whose window ended at the last ``t_end``: the outputs at the
        frame's centre, interpolated (zeros before the first step)."""
        if not self._outs:
            return np.zeros(k_dim, np.float32)
        centre = self._t_end - self.lookahead - 0.5 * SAMPLE_RATE / self.fps
        times = np.array([t for t, _ in self._outs])
        if centre >= times[-1]:
            return self._outs[-1][1].copy()
        if centre <= times[0]:
            return self._outs[0][1].copy()
        j = int(np.searchsorted(times, centre))
        (t0, x0), (t1, x1) = self._outs[j - 1], self._outs[j]
        a = (centre - t0) / (t1 - t0)
        return ((1 - a) * x0 + a * x1).astype(np.float32)
