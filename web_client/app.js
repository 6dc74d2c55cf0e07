// StyleCast browser client: microphone in, avatar video out, over one WebRTC peer connection.
// Plain script, no build step, nothing loaded from elsewhere. Signalling is one non-trickle
// exchange: gather every ICE candidate, then POST the offer to "offer" and apply the answer.
// Identity changes travel as JSON over the "control" data channel (see SESSION_API).
// window.stylecast exposes the live objects and the latest stats for tests and debugging.
"use strict";

(() => {
  const ICE_GATHER_TIMEOUT_MS = 5000;   // send what we have if gathering stalls (e.g. a dead interface)
  const OFFER_TIMEOUT_MS = 15000;       // the server answers an offer in well under a second
  const FIRST_FRAME_TIMEOUT_MS = 30000; // generous: a CPU server loads the generator on first use
  const DISCONNECT_GRACE_MS = 5000;     // ICE "disconnected" often recovers by itself
  const STATS_INTERVAL_MS = 1000;
  const MAX_SEED = 4294967295;          // np.random.RandomState takes seeds in [0, 2**32)
  const MAX_MESSAGES = 50;

  const $ = (id) => document.getElementById(id);
  const ui = {
    video: $("video"), audio: $("remote-audio"), placeholder: $("placeholder"),
    status: $("status"), notice: $("notice"), serverInfo: $("server-info"),
    start: $("start"), stop: $("stop"), interrupt: $("interrupt"), measure: $("measure"),
    seed: $("seed"), random: $("random"), truncation: $("truncation"),
    truncationValue: $("truncation-value"), identityAck: $("identity-ack"),
    photo: $("photo"), photoStatus: $("photo-status"),
    statsBox: $("stats"), fps: $("stat-fps"), resolution: $("stat-resolution"), rtt: $("stat-rtt"),
    latency: $("stat-latency"), frames: $("stat-frames"), server: $("stat-server"),
  };

  // Everything a test (or a curious person in the console) may want to read.
  const api = {
    pc: null,            // RTCPeerConnection of the current session
    dc: null,            // the "control" RTCDataChannel
    state: "idle",       // idle | connecting | live | error (mirrors #status[data-state])
    error: null,         // the message shown while state is "error"
    sessionId: null,     // from the /offer answer
    server: null,        // GET /health body, when the server answered it
    identity: null,      // the last {"type":"identity",...} the server sent
    serverStats: null,   // the last {"type":"stats",...} the server sent
    messages: [],        // the last MAX_MESSAGES control messages received (parsed JSON)
    stats: {},           // see updateStats()
    measured: null,      // the last in-band audio->video measurement (measureLatency)
    start, stop, sendControl, measureLatency,
  };
  window.stylecast = api;

  let generation = 0;    // bumped by start/stop/fail so callbacks of an old session do nothing
  let mic = null;        // MediaStream from getUserMedia
  let timers = {};
  let pendingIdentity = null;  // identity chosen while the data channel was not open yet
  let lastSample = null;       // previous inbound-rtp video sample, for per-interval rates
  let measuring = false;

  // ---------------------------------------------------------------- state + messages

  function setState(state, text) {
    api.state = state;
    api.error = state === "error" ? text : null;
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    const active = state === "connecting" || state === "live";
    ui.start.disabled = active;
    ui.stop.disabled = !active;
    ui.interrupt.disabled = state !== "live";
    ui.measure.disabled = state !== "live" || measuring;
    ui.photo.disabled = state !== "live";
    ui.placeholder.hidden = state === "live";
  }

  function showNotice(text) {
    ui.notice.textContent = text;
    ui.notice.hidden = !text;
  }

  function fail(text) {
    generation++;
    teardown();
    setState("error", text);
    refreshHealth();
  }

  function micErrorMessage(err) {
    switch (err && err.name) {
      case "NotAllowedError":
      case "SecurityError":
        return "Microphone permission was denied. Allow the microphone for this page " +
               "(the icon in the address bar) and press Start again.";
      case "NotFoundError":
      case "OverconstrainedError":
        return "No microphone was found. Connect one and press Start again.";
      case "NotReadableError":
      case "AbortError":
        return "The microphone could not be opened; another application may be using it.";
      default:
        return `Could not open the microphone (${err && err.name}: ${err && err.message}).`;
    }
  }

  function offerErrorMessage(status, body, fallback) {
    const said = (body && typeof body.error === "string" && body.error) || fallback || "";
    if (status === 503) return `The server is busy: ${said || "no free session"}. Try again later.`;
    if (status === 429) return `Too many connection requests: ${said || "slow down"}.`;
    if (status === 400 || status === 413) return `The server refused the connection request: ${said}.`;
    return `The server answered HTTP ${status}${said ? `: ${said}` : ""}.`;
  }

  // ---------------------------------------------------------------- session life cycle

  function readIdentity() {
    const text = ui.seed.value.trim();
    const seed = Number(text);
    if (text === "" || !Number.isInteger(seed) || seed < 0 || seed > MAX_SEED) return null;
    return { seed, truncation: Number(ui.truncation.value) };
  }

  async function getMicrophone() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      const err = new Error("no getUserMedia");
      err.name = "InsecureContext";
      throw err;
    }
    return navigator.mediaDevices.getUserMedia({
      audio: {
        // Voice for lip motion: cancel the echo of the speakers, keep the level steady.
        echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1,
      },
      video: false,
    });
  }

  function waitIceGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function start() {
    if (api.state === "connecting" || api.state === "live") return;
    const gen = ++generation;
    const current = () => gen === generation;
    showNotice("");
    const identity = readIdentity();
    if (!identity) {
      setState("error", `The seed must be a whole number from 0 to ${MAX_SEED}.`);
      return;
    }
    if (typeof RTCPeerConnection === "undefined") {
      setState("error", "This browser does not support WebRTC.");
      return;
    }

    setState("connecting", "Asking for the microphone…");
    let stream;
    try {
      stream = await getMicrophone();
    } catch (err) {
      if (!current()) return;
      fail(err.name === "InsecureContext"
        ? "This page cannot use the microphone here: open it over https or at http://localhost " +
          "(browsers only allow the microphone in a secure context)."
        : micErrorMessage(err));
      return;
    }
    if (!current()) { stream.getTracks().forEach((t) => t.stop()); return; }
    mic = stream;
    const [micTrack] = stream.getAudioTracks();
    if (!micTrack) {
      fail(micErrorMessage({ name: "NotFoundError" }));
      return;
    }

    setState("connecting", "Connecting to the server…");
    const pc = new RTCPeerConnection({ iceServers: [] });  // no STUN: nothing outside can be reached
    api.pc = pc;
    pc.addTransceiver(micTrack, { direction: "sendonly", streams: [stream] });
    pc.addTransceiver("video", { direction: "recvonly" });
    openControlChannel(pc, gen);
    pendingIdentity = null;

    pc.addEventListener("track", (event) => {
      if (!current()) return;
      const media = new MediaStream([event.track]);
      if (event.track.kind === "video") {
        ui.video.srcObject = media;
        ui.video.play().catch(() => {});  // muted video may autoplay; a refusal is harmless
      } else {
        ui.audio.srcObject = media;       // a server that speaks (bot mode)
        ui.audio.play().catch(() => {});
      }
      event.track.addEventListener("ended", () => {
        if (current()) fail("Connection lost: the server stopped sending.");
      });
    });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (!current()) return;
      const s = pc.iceConnectionState;
      if (s === "failed") {
        fail("Connection lost: the network path to the server failed.");
      } else if (s === "disconnected") {
        showNotice("Connection interrupted, waiting for it to come back…");
        clearTimeout(timers.disconnect);
        timers.disconnect = setTimeout(() => {
          if (current()) fail("Connection lost: the server stopped answering.");
        }, DISCONNECT_GRACE_MS);
      } else if (s === "connected" || s === "completed") {
        clearTimeout(timers.disconnect);
        showNotice("");
      } else if (s === "closed") {
        fail("Connection lost: the connection was closed.");
      }
    });
    pc.addEventListener("connectionstatechange", () => {
      if (!current()) return;
      if (pc.connectionState === "failed") fail("Connection lost: the network path to the server failed.");
      else if (pc.connectionState === "closed") fail("Connection lost: the connection was closed.");
    });

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitIceGathering(pc);
    } catch (err) {
      if (current()) fail(`Could not prepare the connection (${err.name}: ${err.message}).`);
      return;
    }
    if (!current()) return;

    let response, body = null, text = "";
    try {
      response = await fetch("offer", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type, identity }),
        signal: AbortSignal.timeout(OFFER_TIMEOUT_MS),
      });
      text = await response.text();
    } catch (err) {
      if (!current()) return;
      fail(err.name === "TimeoutError"
        ? `The server did not answer within ${OFFER_TIMEOUT_MS / 1000} s.`
        : `The server at ${location.host} cannot be reached. Is it running (python -m engine.serve)?`);
      return;
    }
    if (!current()) return;
    try { body = JSON.parse(text); } catch (_) { body = null; }
    if (!response.ok) {
      fail(offerErrorMessage(response.status, body, text.trim().slice(0, 200) || response.statusText));
      return;
    }
    if (!body || typeof body.sdp !== "string" || body.type !== "answer") {
      fail("The server sent an answer this page does not understand.");
      return;
    }
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    } catch (err) {
      if (current()) fail(`The server's answer was not accepted (${err.name}: ${err.message}).`);
      return;
    }
    if (!current()) return;
    api.sessionId = body.session_id ?? null;
    setState("connecting", "The server answered; waiting for the first video frame…");
    ui.statsBox.hidden = false;
    lastSample = null;
    timers.stats = setInterval(() => updateStats(gen), STATS_INTERVAL_MS);
    timers.firstFrame = setTimeout(() => {
      if (current() && api.state === "connecting") {
        fail(`No video arrived within ${FIRST_FRAME_TIMEOUT_MS / 1000} s of connecting.`);
      }
    }, FIRST_FRAME_TIMEOUT_MS);
    const onFrame = () => {
      if (current() && api.state === "connecting" && ui.video.videoWidth > 0) markLive();
    };
    ui.video.onloadeddata = onFrame;
    ui.video.onplaying = onFrame;
  }

  function markLive() {
    clearTimeout(timers.firstFrame);
    setState("live", "Live: speak and the avatar follows.");
    refreshHealth();  // the session count now includes this one
  }

  function teardown() {
    Object.values(timers).forEach((t) => { clearTimeout(t); clearInterval(t); });
    timers = {};
    ui.video.onloadeddata = ui.video.onplaying = null;
    if (api.dc) {
      try { api.dc.close(); } catch (_) { /* already closed */ }
    }
    if (api.pc) api.pc.close();
    if (mic) mic.getTracks().forEach((t) => t.stop());
    api.pc = api.dc = api.sessionId = mic = api.measured = null;
    ui.video.srcObject = null;
    ui.audio.srcObject = null;
    ui.statsBox.hidden = true;  // stale numbers would mislead; window.stylecast.stats keeps the last
    pendingIdentity = null;
  }

  function stop() {
    generation++;
    teardown();
    showNotice("");
    setState("idle", "Stopped.");
    refreshHealth();
  }

  // ---------------------------------------------------------------- control channel

  function openControlChannel(pc, gen) {
    const dc = pc.createDataChannel("control");
    api.dc = dc;
    dc.addEventListener("open", () => {
      if (gen !== generation) return;
      if (pendingIdentity) sendControl(pendingIdentity);
      pendingIdentity = null;
    });
    dc.addEventListener("close", () => {
      if (gen === generation && (api.state === "live" || api.state === "connecting")) {
        fail("Connection lost: the server closed the session.");
      }
    });
    dc.addEventListener("message", (event) => {
      if (gen !== generation) return;
      let msg;
      try { msg = JSON.parse(event.data); } catch (_) { return; }
      if (!msg || typeof msg !== "object") return;
      api.messages.push(msg);
      if (api.messages.length > MAX_MESSAGES) api.messages.shift();
      if (msg.type === "identity" && msg.photo) {
        api.identity = msg;
        const fit = Number.isFinite(msg.psnr_db) ? ` (PSNR ${msg.psnr_db.toFixed(1)} dB)` : "";
        const notes = Array.isArray(msg.warnings) && msg.warnings.length ? ` Note: ${msg.warnings.join("; ")}.` : "";
        ui.photoStatus.textContent = `Server shows your photo${fit}, made in ${msg.seconds} s.${notes}`;
        ui.identityAck.textContent = "Server shows your photo.";
      } else if (msg.type === "photo") {
        ui.photoStatus.textContent = `Inverting your photo: step ${msg.step} of ${msg.steps}…`;
      } else if (msg.type === "identity") {
        api.identity = msg;
        if (Number.isInteger(msg.seed)) ui.seed.value = String(msg.seed);
        if (typeof msg.truncation === "number") setTruncation(msg.truncation);
        const psi = typeof msg.truncation === "number" ? ` (ψ ${msg.truncation.toFixed(2)})` : "";
        ui.identityAck.textContent = `Server shows seed ${msg.seed}${psi}.`;
      } else if (msg.type === "stats") {
        api.serverStats = msg;
      } else if (msg.type === "error") {
        showNotice(`Server: ${msg.error}`);
        if (/^photo /.test(msg.error)) ui.photoStatus.textContent = msg.error;
      }
    });
  }

  /** Send one JSON control message; false when the channel is not open. */
  function sendControl(message) {
    const dc = api.dc;
    if (!dc || dc.readyState !== "open") return false;
    dc.send(JSON.stringify(message));
    return true;
  }

  function setTruncation(value) {
    ui.truncation.value = String(value);
    ui.truncationValue.textContent = Number(ui.truncation.value).toFixed(2);
  }

  function identityChanged() {
    const identity = readIdentity();
    ui.seed.setCustomValidity(identity ? "" : `A whole number from 0 to ${MAX_SEED}`);
    if (!identity) {
      ui.identityAck.textContent = `The seed must be a whole number from 0 to ${MAX_SEED}.`;
      return;
    }
    const message = { type: "identity", ...identity };
    if (sendControl(message)) {
      ui.identityAck.textContent = `Asked for seed ${identity.seed}…`;
    } else if (api.pc) {
      pendingIdentity = message;  // sent as soon as the channel opens
    } else {
      ui.identityAck.textContent = "Applied when you start.";
    }
  }

  function randomIdentity() {
    if (sendControl({ type: "random" })) {
      ui.identityAck.textContent = "Asked for a random face…";  // the server answers with its seed
      return;
    }
    ui.seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
    identityChanged();
  }

  // ---------------------------------------------------------------- photo upload

  const MAX_PHOTO_BYTES = 12 * 1024 * 1024;   // the server's default limit (it answers 413 beyond its own)

  /** POST the chosen file to "photo"; the server answers at once (202, or why not), then reports
   *  progress and the new identity over the control channel. */
  async function uploadPhoto() {
    const file = ui.photo.files && ui.photo.files[0];
    ui.photo.value = "";
    if (!file) return;
    if (!api.sessionId) {
      ui.photoStatus.textContent = "Start first: the photo becomes the face of a running session.";
      return;
    }
    if (file.size > MAX_PHOTO_BYTES) {
      ui.photoStatus.textContent = `That file is ${(file.size / 1048576).toFixed(1)} MiB; the limit is 12 MiB.`;
      return;
    }
    ui.photoStatus.textContent = `Sending ${file.name}…`;
    try {
      const response = await fetch("photo", {
        method: "POST", body: file, signal: AbortSignal.timeout(OFFER_TIMEOUT_MS * 4),
        headers: { "Content-Type": file.type || "application/octet-stream", "X-Session-Id": api.sessionId },
      });
      let body = {};
      try { body = await response.json(); } catch (_) { /* not JSON: the status says enough */ }
      ui.photoStatus.textContent = response.status === 202
        ? `Inverting your photo (${body.steps} steps)…`
        : `Not used: ${body.error || `HTTP ${response.status}`}`;
    } catch (err) {
      ui.photoStatus.textContent = `The upload failed: ${err.message || err}`;
    }
  }

  // ---------------------------------------------------------------- stats overlay

  const ms = (seconds) => seconds * 1000;
  const fmt = (v, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : "–");

  async function updateStats(gen) {
    const pc = api.pc;
    if (!pc || gen !== generation) return;
    let report;
    try { report = await pc.getStats(); } catch (_) { return; }
    if (gen !== generation) return;

    let video = null, transport = null;
    const pairs = [];
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") video = s;
      else if (s.type === "transport") transport = s;
      else if (s.type === "candidate-pair") pairs.push(s);
    });
    const pair = (transport && transport.selectedCandidatePairId && report.get(transport.selectedCandidatePairId))
      || pairs.find((p) => p.nominated && p.state === "succeeded") || null;

    const st = { updatedAt: Date.now() };
    if (pair) {
      st.rttMs = Number.isFinite(pair.currentRoundTripTime) ? ms(pair.currentRoundTripTime)
        : pair.responsesReceived > 0 ? ms(pair.totalRoundTripTime / pair.responsesReceived) : NaN;
    }
    if (video) {
      st.framesDecoded = video.framesDecoded ?? 0;
      st.framesDropped = video.framesDropped ?? 0;
      st.framesReceived = video.framesReceived ?? 0;
      st.packetsLost = video.packetsLost ?? 0;
      st.width = video.frameWidth ?? ui.video.videoWidth;
      st.height = video.frameHeight ?? ui.video.videoHeight;
      // Rates over the last interval, not since the start, so the overlay follows changes.
      const prev = lastSample;
      const dt = prev ? (video.timestamp - prev.timestamp) / 1000 : 0;
      const dDecoded = prev ? st.framesDecoded - (prev.framesDecoded ?? 0) : 0;
      st.fps = Number.isFinite(video.framesPerSecond) ? video.framesPerSecond
        : dt > 0 ? dDecoded / dt : NaN;
      const dEmitted = (video.jitterBufferEmittedCount ?? 0) - (prev ? prev.jitterBufferEmittedCount ?? 0 : 0);
      const dBuffered = (video.jitterBufferDelay ?? 0) - (prev ? prev.jitterBufferDelay ?? 0 : 0);
      st.jitterBufferMs = dEmitted > 0 ? ms(dBuffered / dEmitted) : NaN;
      const dDecode = (video.totalDecodeTime ?? 0) - (prev ? prev.totalDecodeTime ?? 0 : 0);
      const decodedSpan = prev ? dDecoded : st.framesDecoded;
      st.decodeMs = decodedSpan > 0 ? ms(dDecode / decodedSpan) : NaN;
      lastSample = video;
    }
    st.server = api.serverStats;
    // Audio->video latency estimate: the mic audio goes up (RTT/2), the server holds it (see
    // serverHoldMs), the video comes back down (RTT/2), waits in the browser's jitter buffer,
    // and is decoded. Capture, Opus packetisation and display are not measured, so the real
    // figure is somewhat higher.
    st.latencyParts = {
      network: st.rttMs,
      server: serverHoldMs(api.serverStats),
      jitterBuffer: st.jitterBufferMs,
      decode: st.decodeMs,
    };
    const known = Object.values(st.latencyParts).filter(Number.isFinite);
    st.latencyMs = known.length ? known.reduce((a, b) => a + b, 0) : NaN;
    st.latencyComplete = known.length === Object.keys(st.latencyParts).length;
    api.stats = st;
    renderStats(st);
    if (api.state === "connecting" && st.framesDecoded > 0 && ui.video.videoWidth > 0) markLive();
  }

  /** How long the server holds the voice before the frame that shows it leaves: its measured
   *  audio-arrival-to-frame time where it reports one ("arrival_to_frame_ms"), else its
   *  algorithmic lag (resampler + feature lookahead, "latency_ms") plus the synthesis time. */
  function serverHoldMs(s) {
    if (!s) return NaN;
    const measured = Number(s.arrival_to_frame_ms);
    if (s.arrival_to_frame_ms != null && Number.isFinite(measured)) return measured;
    const lag = Number(s.latency_ms), synth = Number(s.synthesis_ms);
    if (s.latency_ms == null || !Number.isFinite(lag)) return NaN;
    return lag + (s.synthesis_ms != null && Number.isFinite(synth) ? synth : 0);
  }

  function renderStats(st) {
    ui.fps.textContent = `${fmt(st.fps, 1)} fps`;
    ui.resolution.textContent = st.width ? `${st.width}×${st.height}` : "–";
    ui.rtt.textContent = `${fmt(st.rttMs, 1)} ms`;
    const p = st.latencyParts;
    const estimate = `${st.latencyComplete ? "≈" : "≥"} ${fmt(st.latencyMs)} ms`;
    const m = api.measured;
    ui.latency.textContent = m && m.found ? `${fmt(m.medianMs)} ms measured (est. ${estimate})` : estimate;
    ui.latency.title = (m && m.found ? `measured in-band: ${m.samplesMs.map((v) => fmt(v)).join(", ")} ms; ` : "") +
      `estimate: network ${fmt(p.network, 1)} + server ${fmt(p.server)} + ` +
      `jitter buffer ${fmt(p.jitterBuffer)} + decode ${fmt(p.decode, 1)} ms`;
    ui.frames.textContent = `${st.framesDecoded ?? "–"} / ${st.framesDropped ?? "–"}`;
    const s = st.server;
    ui.server.textContent = s
      ? `${fmt(Number(s.fps), 1)} fps, synth ${fmt(Number(s.synthesis_ms), 1)} ms, dropped ${s.dropped ?? "–"}`
      : "–";
  }

  /** Measure audio->video in-band (web_client/probe.js): the microphone pauses for ~5 s while the
   *  page sends its own buzzes and times the frames whose mouth opens. */
  async function measureLatency() {
    if (api.state !== "live" || measuring || !window.StyleCastProbe) return null;
    const gen = generation;
    measuring = true;
    ui.measure.disabled = true;
    showNotice("Measuring audio→video: the microphone pauses for a few seconds…");
    try {
      const result = await window.StyleCastProbe.measure({
        pc: api.pc, micTrack: mic && mic.getAudioTracks()[0], video: ui.video });
      if (gen !== generation) return null;
      api.measured = { ...result, at: Date.now() };
      showNotice(result.found ? "" : "No mouth movement was seen: the estimate stays.");
      renderStats(api.stats);
      return api.measured;
    } catch (err) {
      if (gen === generation) showNotice(`Could not measure: ${err.message}`);
      return null;
    } finally {
      measuring = false;
      if (gen === generation) ui.measure.disabled = api.state !== "live";
    }
  }

  // ---------------------------------------------------------------- server info

  async function refreshHealth() {
    try {
      const response = await fetch("health", { signal: AbortSignal.timeout(5000) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const h = await response.json();
      api.server = h;
      const res = h.resolution ? `${h.resolution}×${h.resolution}` : "";
      ui.serverInfo.textContent = [
        h.device && `device ${h.device}`, res, h.fps && `${h.fps} fps`,
        Number.isFinite(h.sessions) && `${h.sessions}/${h.max_sessions} sessions`,
      ].filter(Boolean).join(" · ");
      ui.serverInfo.classList.remove("warn");
    } catch (_) {
      api.server = null;
      ui.serverInfo.textContent = `The server at ${location.host} does not answer.`;
      ui.serverInfo.classList.add("warn");
    }
  }

  // ---------------------------------------------------------------- wiring

  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", stop);
  ui.interrupt.addEventListener("click", () => sendControl({ type: "interrupt" }));
  ui.measure.addEventListener("click", measureLatency);
  ui.seed.addEventListener("change", identityChanged);
  ui.truncation.addEventListener("input", () => setTruncation(ui.truncation.value));
  ui.truncation.addEventListener("change", identityChanged);
  ui.random.addEventListener("click", randomIdentity);
  ui.photo.addEventListener("change", uploadPhoto);
  window.addEventListener("pagehide", () => { generation++; teardown(); });
  setTruncation(ui.truncation.value);
  setState("idle", "Ready. Press Start and allow the microphone.");
  refreshHealth();
})();
