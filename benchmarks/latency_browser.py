"""The browser half of ``benchmarks.latency``: the same burst probes from headless Chromium.

Chromium (the Debian package, driven by Playwright) opens the server's own page (same origin, so
``POST /offer`` needs no CORS) and runs :data:`PROBE_JS` in it: a WebAudio oscillator gated on a
schedule is the microphone (a ``MediaStreamAudioDestinationNode`` track), Chromium's own WebRTC
stack sends it and receives the avatar, and every video frame the compositor presents
(``requestVideoFrameCallback``) is drawn to a canvas and read back: its stamp and the luma means
of its 8×8-pixel blocks. Python compares those with the reference frames by stamp (the silent
face, or the floor's silent frame), as ``benchmarks.loopback.analyse`` does for the aiortc client.

Clocks: an onset's time is the page's ``performance.now()`` when the gain step at context time
``T`` is due (``now + (T - currentTime)``, read together); a frame's time is its
``presentationTime`` (the same clock). Chromium renders WebAudio a few ms ahead of ``currentTime``
(``baseLatency``, reported), so a latency here may be that much longer than the audio's real age.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["CHROMIUM", "PROBE_JS", "block_means", "measure_browser"]

CHROMIUM = "/usr/bin/chromium"
GRID = 8                        # block size (px) of the luma means
MIN_MOVED = 8.0                 # grey levels of a block mean: an open mouth moves some by 30 or more
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
                 "--autoplay-policy=no-user-gesture-required"]

PROBE_JS = r"""
async ({seconds, onsets, burst, level, grid, hint}) => {
  const ctx = new AudioContext({sampleRate: 48000, latencyHint: "interactive"});
  await ctx.resume();
  const osc = ctx.createOscillator(), gain = ctx.createGain(), dest = ctx.createMediaStreamDestination();
  osc.frequency.value = 220; gain.gain.value = 0;
  osc.connect(gain).connect(dest); osc.start();
  const pc = new RTCPeerConnection({iceServers: []});
  pc.addTrack(dest.stream.getAudioTracks()[0], dest.stream);
  const vt = pc.addTransceiver("video", {direction: "recvonly"});
  if (hint) {          // ask Chromium's video jitter buffer to aim for no delay
    if ("jitterBufferTarget" in vt.receiver) vt.receiver.jitterBufferTarget = 0;
    if ("playoutDelayHint" in vt.receiver) vt.receiver.playoutDelayHint = 0;
  }
  pc.createDataChannel("control");
  const video = document.createElement("video");
  video.muted = true; video.playsInline = true; document.body.appendChild(video);
  pc.ontrack = (e) => { if (e.track.kind === "video") video.srcObject = new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") return done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
    setTimeout(done, 5000);
  });
  const r = await fetch("offer", {method: "POST", headers: {"Content-Type": "application/json"},
                                  body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  if (!r.ok) throw new Error("offer refused: " + r.status + " " + await r.text());
  await pc.setRemoteDescription(await r.json());
  await new Promise((done, fail) => {
    video.onloadeddata = done; setTimeout(() => fail(new Error("no video in 30 s")), 30000);
  });
  await video.play();
  const canvas = document.createElement("canvas");
  const c2d = canvas.getContext("2d", {willReadFrequently: true});
  const frames = [];
  let running = true;
  const onFrame = (now, meta) => {
    const w = video.videoWidth, h = video.videoHeight;
    canvas.width = w; canvas.height = h;
    c2d.drawImage(video, 0, 0, w, h);
    const px = c2d.getImageData(0, 0, w, h).data;
    const luma = (x, y) => { const i = 4 * (y * w + x); return (px[i] + px[i + 1] + px[i + 2]) / 3; };
    const block = Math.max(4, Math.floor(w / 16)), top = h - block, q = Math.max(1, Math.floor(block / 4));
    let stamp = 0;
    for (let bit = 0; bit < 16; bit++) {
      let s = 0, n = 0;
      for (let y = top + q; y < top + block - q; y++)
        for (let x = bit * block + q; x < (bit + 1) * block - q; x++) { s += luma(x, y); n++; }
      if (s / n > 127) stamp |= 1 << bit;
    }
    const means = [];
    for (let by = 0; by + grid <= top; by += grid)
      for (let bx = 0; bx + grid <= w; bx += grid) {
        let s = 0;
        for (let y = by; y < by + grid; y++) for (let x = bx; x < bx + grid; x++) s += luma(x, y);
        means.push(Math.round(10 * s / (grid * grid)) / 10);
      }
    frames.push({t: meta.presentationTime, stamp, means});
    if (running) video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
  // the bursts, on the audio clock; their page-clock times read beside currentTime
  const t0 = ctx.currentTime + 0.1, p0 = performance.now() + 100;
  const onsetTimes = [];
  for (const s of onsets) {
    gain.gain.setValueAtTime(level, t0 + s);
    gain.gain.setValueAtTime(0, t0 + s + burst);
    onsetTimes.push(p0 + 1000 * s);
  }
  await new Promise((done) => setTimeout(done, 1000 * seconds));
  running = false;
  const stats = {baseLatency: ctx.baseLatency, outputLatency: ctx.outputLatency,
                 jitterBufferTarget: vt.receiver.jitterBufferTarget ?? null};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") {
      stats.video_jitter_buffer_ms = 1000 * r.jitterBufferDelay / Math.max(1, r.jitterBufferEmittedCount);
      stats.video_decode_ms = 1000 * r.totalDecodeTime / Math.max(1, r.framesDecoded);
      stats.frames_decoded = r.framesDecoded; stats.frames_dropped = r.framesDropped;
    }
    if (r.type === "candidate-pair" && r.state === "succeeded" && r.currentRoundTripTime !== undefined)
      stats.rtt_ms = 1000 * r.currentRoundTripTime;
  });
  pc.close(); await ctx.close();
  return {onsets: onsetTimes, frames, stats};
}
"""


def block_means(img: np.ndarray, grid: int = GRID) -> np.ndarray:
    """The page's per-block luma means of an RGB frame (the stamp row left out), for references."""
    h, w = img.shape[:2]
    top = h - max(4, w // 16)
    luma = img[:top].astype(np.float64).mean(axis=2)
    gh, gw = top // grid, w // grid
    return luma[:gh * grid, :gw * grid].reshape(gh, grid, gw, grid).mean(axis=(1, 3)).reshape(-1)


def analyse_browser(result: dict, refs_fn) -> dict[str, Any]:
    """Latency per onset: to the first presented frame whose block means moved past the threshold
    (``benchmarks.loopback.summarise`` on the page's clock)."""
    from benchmarks.loopback import summarise

    frames = result["frames"]
    stamps = np.array([f["stamp"] for f in frames], np.int64)
    refs = refs_fn(int(stamps.max()) + 1) if frames else None
    ref_means: dict[int, np.ndarray] = {}
    diffs = []
    for f, k in zip(frames, stamps):
        if k not in ref_means:
            ref_means[k] = block_means(refs[k])
        m = np.asarray(f["means"], np.float64)
        diffs.append(float(np.abs(m - ref_means[k]).max()) if m.size == ref_means[k].size else np.nan)
    times = np.array([f["t"] for f in frames], np.float64) / 1e3          # page ms -> s
    out = summarise(stamps, times, np.array(diffs), [t / 1e3 for t in result["onsets"]], MIN_MOVED)
    out["page"] = result.get("stats")
    return out


async def measure_browser(args, plan=None) -> dict[str, Any]:
    """Burst runs from headless Chromium against the floor and StyleCast; ``plan``: (name, mode,
    fps) rows (default: the floor and StyleCast at 25 fps, StyleCast at 30 and 50). A name ending
    in " hint" sets the video receiver's ``jitterBufferTarget`` / ``playoutDelayHint`` to 0."""
    from playwright.async_api import async_playwright

    from benchmarks.latency_probes import burst_track, note, refs_for, server

    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing (Debian package 'chromium')")
    plan = plan or [("floor@25", "floor", 25.0), ("stylecast@25", "stylecast", 25.0),
                    ("stylecast@30", "stylecast", 30.0), ("stylecast@50", "stylecast", 50.0)]
    _, starts = burst_track(args.seconds, args.bursts)
    onsets = [n * 0.02 - 1.5 for n in starts]       # burst_track puts the first onset 1.5 s in
    out: dict[str, Any] = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for name, mode, fps in plan:
                note(f"Chromium, {name}: {args.seconds:g} s, {args.bursts} bursts")
                async with server(args, mode, fps) as (url, health):
                    context = await browser.new_context()
                    try:
                        page = await context.new_page()
                        await page.goto(url + "/")
                        result = await page.evaluate(PROBE_JS, {
                            "seconds": args.seconds + 1.0, "onsets": [s + 1.0 for s in onsets],
                            "burst": min(0.4, args.seconds / (args.bursts + 1) / 3), "level": 0.5, "grid": GRID,
                            "hint": name.endswith(" hint")})
                    finally:
                        await context.close()
                res = analyse_browser(result, refs_for(args, mode, fps, health["resolution"]))
                res["fps"] = fps
                res["client"] = "headless Chromium"
                out[name] = res
        finally:
            await browser.close()
    return out
