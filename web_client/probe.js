// StyleCast latency probe: measures audio->video in-band, from inside the page.
// For a few seconds the microphone track of the peer connection is replaced (replaceTrack, no
// renegotiation) by a WebAudio source: silence, then short 140 Hz buzzes (a voiced sound, which
// the audio model answers with an open mouth). Every video frame the browser presents
// (requestVideoFrameCallback) is drawn on a 128 px canvas; the mouth region is compared, block by
// block, with the mean of the frames of the silence before each buzz. A buzz's latency: from the moment
// its first sample is due on the audio clock to the presentation time of the first frame whose
// mouth moved (both on the page's performance.now() clock). The microphone comes back at the end.
// window.StyleCastProbe.measure({pc, micTrack, video, bursts}) resolves to
// {samplesMs: [...], medianMs, found, bursts, frames, detail: [{threshold, peak}]}.
"use strict";

(() => {
  const SIZE = 128;                // the frame is read at SIZE x SIZE
  const GRID = 8;                  // block size (px at SIZE) of the differences
  const MOUTH = { x0: 0.25, x1: 0.75, y0: 0.5, y1: 0.94 };   // of the frame: where a face's mouth is
  const MIN_MOVED = 12;            // mean |difference| of a block, grey levels: an open mouth reads 25+
  const LEAD_S = 0.9, BURST_S = 0.3, GAP_S = 0.9;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const X0 = Math.floor(MOUTH.x0 * SIZE / GRID) * GRID, X1 = Math.floor(MOUTH.x1 * SIZE / GRID) * GRID;
  const Y0 = Math.floor(MOUTH.y0 * SIZE / GRID) * GRID, Y1 = Math.floor(MOUTH.y1 * SIZE / GRID) * GRID;
  const W = X1 - X0, H = Y1 - Y0;

  /** The mouth region's luma, W x H. */
  function mouthLuma(c2d) {
    const px = c2d.getImageData(X0, Y0, W, H).data;
    const out = new Float32Array(W * H);
    for (let i = 0; i < out.length; i++) out[i] = (px[4 * i] + px[4 * i + 1] + px[4 * i + 2]) / 3;
    return out;
  }

  /** The largest mean |a - b| over the GRID x GRID blocks. */
  function distance(a, b) {
    let worst = 0;
    for (let by = 0; by < H; by += GRID) {
      for (let bx = 0; bx < W; bx += GRID) {
        let s = 0;
        for (let y = by; y < by + GRID; y++) {
          for (let x = bx; x < bx + GRID; x++) s += Math.abs(a[y * W + x] - b[y * W + x]);
        }
        worst = Math.max(worst, s / (GRID * GRID));
      }
    }
    return worst;
  }

  async function measure({ pc, micTrack, video, bursts = 3 }) {
    if (!pc || !video || typeof video.requestVideoFrameCallback !== "function") {
      throw new Error("this browser cannot time video frames (no requestVideoFrameCallback)");
    }
    const sender = pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (!sender) throw new Error("no microphone is being sent");
    const ctx = new AudioContext({ latencyHint: "interactive" });
    await ctx.resume();
    const osc = ctx.createOscillator(), gain = ctx.createGain(), dest = ctx.createMediaStreamDestination();
    osc.type = "sawtooth";
    osc.frequency.value = 140;
    gain.gain.value = 0;
    osc.connect(gain).connect(dest);
    osc.start();
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = SIZE;
    const c2d = canvas.getContext("2d", { willReadFrequently: true });
    const frames = [];                     // {t, luma} of every presented frame
    let running = true;
    const onFrame = (_now, meta) => {
      c2d.drawImage(video, 0, 0, SIZE, SIZE);
      frames.push({ t: meta.presentationTime, luma: mouthLuma(c2d) });
      if (running) video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    const onsets = [];
    try {
      await sender.replaceTrack(dest.stream.getAudioTracks()[0]);
      const t0 = ctx.currentTime + LEAD_S, p0 = performance.now() + 1000 * LEAD_S;
      for (let j = 0; j < bursts; j++) {
        const at = j * (BURST_S + GAP_S);
        gain.gain.setValueAtTime(0.4, t0 + at);
        gain.gain.setValueAtTime(0, t0 + at + BURST_S);
        onsets.push(p0 + 1000 * at);
      }
      await sleep(1000 * (LEAD_S + bursts * (BURST_S + GAP_S)) + 300);
    } finally {
      running = false;
      await sender.replaceTrack(micTrack || null).catch(() => {});
      osc.stop();
      ctx.close().catch(() => {});
    }
    const samplesMs = [], detail = [];
    for (const on of onsets) {
      // the silent frames just before the buzz: the mouth at rest, and how much it wobbles
      const rest = frames.filter((f) => f.t > on - 500 && f.t <= on);
      if (rest.length < 3) { detail.push({ rest: rest.length }); continue; }
      const mean = new Float32Array(W * H);
      rest.forEach((f) => f.luma.forEach((v, i) => { mean[i] += v / rest.length; }));
      const noise = Math.max(...rest.map((f) => distance(f.luma, mean)));
      const threshold = Math.max(MIN_MOVED, 2 * noise);
      const after = frames.filter((f) => f.t > on && f.t < on + 1000);
      const hit = after.find((f) => distance(f.luma, mean) > threshold);
      if (hit) samplesMs.push(hit.t - on);
      detail.push({ threshold, peak: Math.max(0, ...after.map((f) => distance(f.luma, mean))) });
    }
    const sorted = [...samplesMs].sort((a, b) => a - b);
    const medianMs = sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : NaN;
    return { samplesMs, medianMs, found: samplesMs.length, bursts, frames: frames.length, detail };
  }

  window.StyleCastProbe = { measure };
})();
