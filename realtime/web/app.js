// realtime-detect browser client: microphone -> AudioWorklet -> WebSocket (protocol v1, f32le)
// -> score events -> verdict, numbers and a canvas chart. No dependencies, works offline.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const CLOSE_REASONS = {
    1000: "closed normally",
    1001: "server shutting down",
    1003: "audio format refused by the server",
    1006: "connection lost (server unreachable, stopped or crashed)",
    1008: "refused by the server (token or origin not accepted)",
    1009: "message too big for the server",
    1011: "internal server error",
    1013: "server busy, try again later",
  };
  const LABEL_TEXT = { bonafide: "BONA FIDE", spoof: "SPOOF", no_speech: "NO SPEECH" };
  const MAX_EVENTS = 20000; // about 3 hours at a 0.5 s hop; the oldest go first
  const CHART_SPAN_S = 60; // seconds of stream time visible; the chart scrolls after that
  const MAX_BUFFERED_S = 5; // audio queued in the socket before blocks are dropped (slow link)
  const BLOCK_S = 0.04; // worklet block length
  const FINISH_TIMEOUT_MS = 15000; // wait this long for the summary after "end"

  // Float32Array bytes are in platform order; the protocol wants little-endian.
  const LITTLE_ENDIAN = new Uint8Array(new Float32Array([1]).buffer)[3] === 0x3f;

  const ui = {
    status: $("status"), start: $("start"), stop: $("stop"), token: $("token"), meta: $("meta"),
    verdict: $("verdict"), verdictLabel: $("verdict-label"), verdictProb: $("verdict-prob"),
    latency: $("latency"), count: $("count"), streamTime: $("stream-time"), sent: $("sent"),
    canvas: $("chart"), threshold: $("threshold"), message: $("message"), summary: $("summary"),
  };

  const events = []; // score events of the current stream (exposed for tests)
  let session = null;
  let lastRate = 0;

  // ---- threshold: ?threshold=0.7 in the URL, else the server's (if its ready says), else 0.5
  const urlThreshold = (() => {
    const v = Number(new URLSearchParams(location.search).get("threshold"));
    return v > 0 && v < 1 ? v : null;
  })();
  let threshold = urlThreshold ?? 0.5;

  function setThreshold(v) {
    threshold = v;
    ui.threshold.textContent = v.toFixed(2);
    chart.schedule();
  }

  // ---- status line and messages ------------------------------------------------------
  function setStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
    document.body.dataset.state = state;
  }

  function showMessage(text, kind = "error") {
    ui.message.textContent = text;
    ui.message.dataset.kind = kind;
    ui.message.hidden = false;
  }

  function clearMessage() {
    ui.message.hidden = true;
    ui.message.textContent = "";
  }

  // ---- chart: spoof probability per window against window end time ---------------------
  const chart = {
    pending: false,
    drawn: 0,
    schedule() {
      if (this.pending) return;
      this.pending = true;
      // rAF pauses in hidden tabs; a timer keeps the count (and tests) honest there.
      const run = () => { this.pending = false; this.draw(); };
      if (document.hidden) setTimeout(run, 100); else requestAnimationFrame(run);
    },
    draw() {
      const c = ui.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(200, Math.round(c.clientWidth || c.width));
      const h = Math.max(120, Math.round(c.clientHeight || c.height));
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr);
        c.height = Math.round(h * dpr);
      }
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.clearRect(0, 0, w, h);
      const css = getComputedStyle(document.documentElement);
      const color = (name) => css.getPropertyValue(name).trim() || "#888";
      const m = { l: 58, r: 12, t: 10, b: 26 };
      const pw = w - m.l - m.r;
      const ph = h - m.t - m.b;
      const lastEnd = events.length ? events[events.length - 1].end_s : 0;
      // The time axis grows with the stream up to CHART_SPAN_S, then scrolls.
      const span = Math.min(CHART_SPAN_S, Math.max(10, Math.ceil(lastEnd / 5) * 5 + 5));
      const x0 = Math.max(0, lastEnd - span);
      const X = (t) => m.l + ((t - x0) / span) * pw;
      const Y = (p) => m.t + (1 - p) * ph;

      // Axes and grid.
      g.font = "11px system-ui, sans-serif";
      g.fillStyle = color("--muted");
      g.strokeStyle = color("--line");
      g.lineWidth = 1;
      g.textAlign = "right";
      g.textBaseline = "middle";
      for (const p of [0, 0.25, 0.5, 0.75, 1]) {
        g.beginPath(); g.moveTo(m.l, Y(p)); g.lineTo(m.l + pw, Y(p)); g.stroke();
        g.fillText(p.toFixed(2), m.l - 6, Y(p));
      }
      g.save();
      g.translate(12, m.t + ph / 2);
      g.rotate(-Math.PI / 2);
      g.textAlign = "center";
      g.fillText("spoof probability", 0, 0);
      g.restore();
      g.textAlign = "center";
      g.textBaseline = "top";
      const step = span > 30 ? 10 : span > 12 ? 5 : 1;
      for (let t = Math.ceil(x0 / step) * step; t <= x0 + span; t += step) {
        g.fillText(`${t}s`, X(t), m.t + ph + 6);
      }

      // Threshold.
      g.save();
      g.setLineDash([6, 4]);
      g.strokeStyle = color("--accent");
      g.lineWidth = 1.5;
      g.beginPath(); g.moveTo(m.l, Y(threshold)); g.lineTo(m.l + pw, Y(threshold)); g.stroke();
      g.restore();

      // Probability line (broken at windows without a probability), then the points.
      const visible = events.filter((e) => e.end_s >= x0);
      g.strokeStyle = color("--fg");
      g.lineWidth = 1.2;
      g.beginPath();
      let pen = false;
      for (const e of visible) {
        if (e.spoof_probability == null) { pen = false; continue; }
        const x = X(e.end_s), y = Y(e.spoof_probability);
        if (pen) g.lineTo(x, y); else g.moveTo(x, y);
        pen = true;
      }
      g.stroke();
      let n = 0;
      for (const e of visible) {
        const p = e.spoof_probability;
        g.beginPath();
        if (p == null || e.label === "no_speech") {
          g.strokeStyle = color("--no-speech");
          g.arc(X(e.end_s), Y(p ?? 0), 3.5, 0, 2 * Math.PI);
          g.stroke();
        } else {
          g.fillStyle = color(e.label === "spoof" ? "--spoof" : "--bonafide");
          g.arc(X(e.end_s), Y(p), e.alert ? 5 : 3.5, 0, 2 * Math.PI);
          g.fill();
        }
        n += 1;
      }
      this.drawn = n;
      c.dataset.points = String(n);
    },
  };
  window.addEventListener("resize", () => chart.schedule());

  // ---- readouts -------------------------------------------------------------------------
  function showScore(e) {
    ui.verdict.dataset.label = e.label;
    ui.verdict.dataset.alert = String(Boolean(e.alert));
    ui.verdictLabel.textContent = (e.alert ? "⚠ " : "") + (LABEL_TEXT[e.label] || e.label);
    ui.verdictProb.textContent = e.spoof_probability == null
      ? "no speech in this window" : `spoof probability ${e.spoof_probability.toFixed(2)}`;
    ui.latency.textContent = `${Number(e.latency_ms).toFixed(1)} ms`;
    ui.count.textContent = String(events.length);
    ui.streamTime.textContent = `${Number(e.end_s).toFixed(1)} s`;
  }

  function resetReadouts() {
    events.length = 0;
    ui.verdict.dataset.label = "none";
    ui.verdict.dataset.alert = "false";
    ui.verdictLabel.textContent = "—";
    ui.verdictProb.textContent = "";
    ui.latency.textContent = "—";
    ui.count.textContent = "0";
    ui.streamTime.textContent = "—";
    ui.sent.textContent = "—";
    ui.summary.hidden = true;
    ui.meta.textContent = "";
    clearMessage();
    chart.schedule();
  }

  // ---- one streaming session: microphone + socket -----------------------------------------
  class Session {
    constructor() {
      this.ws = null; this.ctx = null; this.media = null; this.node = null;
      this.rate = 0; this.ready = false; this.ending = false; this.closed = false;
      this.sentFrames = 0; this.droppedFrames = 0; this.finishTimer = 0; this.endTimer = 0; this.endSent = false;
    }

    async start() {
      setStatus("connecting", "requesting microphone…");
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        throw new Error("microphone capture needs a secure page: open it as https://… or http://localhost…");
      }
      if (typeof AudioWorkletNode === "undefined") {
        throw new Error("this browser has no AudioWorklet; use a current Chrome, Firefox or Safari");
      }
      // Raw audio: echo cancellation, noise suppression and AGC would alter what is judged.
      this.media = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
        video: false,
      });
      if (this.closed) { this.stopAudio(); return; }
      const track = this.media.getAudioTracks()[0];
      track.addEventListener("ended", () => this.fail("the microphone stopped (unplugged or taken by another app)"));
      this.ctx = new AudioContext({ latencyHint: "interactive" });
      await this.ctx.audioWorklet.addModule(new URL("worklet.js", document.baseURI));
      this.rate = this.ctx.sampleRate;
      lastRate = this.rate;
      this.node = new AudioWorkletNode(this.ctx, "rtd-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers", // downmix to mono
        processorOptions: { blockFrames: Math.round(this.rate * BLOCK_S) },
      });
      this.node.port.onmessage = (e) => this.onBlock(e.data);
      this.ctx.createMediaStreamSource(this.media).connect(this.node);
      this.node.connect(this.ctx.destination); // outputs silence; being connected keeps it pulled
      if (this.ctx.state === "suspended") await this.ctx.resume();
      if (this.closed) { this.stopAudio(); return; }
      this.connect();
    }

    connect() {
      const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
      setStatus("connecting", "connecting…");
      this.url = url;
      const ws = new WebSocket(url);
      this.ws = ws;
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        const start = { type: "start", sample_rate: Math.round(this.rate), channels: 1, format: "f32le" };
        const token = ui.token.value.trim();
        if (token) start.token = token;
        ws.send(JSON.stringify(start));
        setStatus("connecting", "waiting for the server…");
      };
      ws.onmessage = (e) => {
        if (typeof e.data !== "string") return; // the server sends only JSON text
        let msg;
        try { msg = JSON.parse(e.data); } catch (err) {
          showMessage(`server sent a message that is not JSON: ${String(e.data).slice(0, 80)}`);
          return;
        }
        this.onEvent(msg);
      };
      ws.onerror = () => {}; // no details here by design of the API; the close event follows
      ws.onclose = (e) => this.onClose(e);
    }

    onEvent(msg) {
      switch (msg.type) {
        case "ready":
          this.ready = true;
          setStatus("streaming", `streaming ${Math.round(this.rate)} Hz`);
          ui.meta.textContent = `model ${msg.model} · window ${msg.window_s} s · hop ${msg.hop_s} s`;
          if (urlThreshold == null && typeof msg.threshold === "number") setThreshold(msg.threshold);
          break;
        case "score":
          events.push(msg);
          if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
          if (msg.shed) showMessage(`server under load: ${msg.shed} window(s) skipped`, "info");
          showScore(msg);
          chart.schedule();
          break;
        case "summary":
          window.__rtd.summary = msg;
          ui.summary.hidden = false;
          ui.summary.textContent = `Summary: ${LABEL_TEXT[msg.label] || msg.label} over ${msg.windows} window(s)` +
            (msg.spoof_probability == null ? "" : `, spoof probability ${msg.spoof_probability.toFixed(2)}`) +
            (msg.shed ? `, ${msg.shed} skipped under load` : "");
          break;
        case "error":
          window.__rtd.errors.push(msg);
          showMessage(`server error ${msg.code}: ${msg.message}`);
          break;
        default:
          break; // newer servers may add event types
      }
    }

    onBlock(data) {
      const last = data instanceof Float32Array ? null : data.last; // {last} ends the capture
      const block = last || data;
      const ws = this.ws;
      if (this.ready && ws && ws.readyState === WebSocket.OPEN && block.length > 0) { // nothing before "ready"
        if (ws.bufferedAmount > MAX_BUFFERED_S * this.rate * 4) {
          this.droppedFrames += block.length; // the link is slower than real time
        } else {
          ws.send(LITTLE_ENDIAN ? block : toLittleEndian(block));
          this.sentFrames += block.length;
        }
        ui.sent.textContent = `${(this.sentFrames / this.rate).toFixed(1)} s` +
          (this.droppedFrames ? ` (${(this.droppedFrames / this.rate).toFixed(1)} s dropped: slow connection)` : "");
      }
      if (last && this.ending) this.sendEnd();
    }

    // Stop: flush the worklet's partial block, then "end"; the server answers summary + close 1000.
    stop() {
      if (this.closed || this.ending) return;
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || !this.ready) {
        this.close(1000, "stopped before streaming");
        setStatus("idle", "stopped");
        return;
      }
      this.ending = true;
      setStatus("finishing", "finishing…");
      this.node.port.postMessage("stop");
      this.endTimer = setTimeout(() => this.sendEnd(), 500); // in case the worklet does not answer
    }

    sendEnd() {
      if (this.endSent) return;
      this.endSent = true;
      clearTimeout(this.endTimer);
      this.stopAudio();
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "end" }));
      this.finishTimer = setTimeout(() => {
        showMessage(`the server did not finish the stream within ${FINISH_TIMEOUT_MS / 1000} s; closed`);
        this.close(1000, "summary timeout");
      }, FINISH_TIMEOUT_MS);
    }

    fail(text) {
      if (this.closed) return;
      showMessage(text);
      setStatus("error", "error");
      this.close(1000, "client error");
    }

    onClose(e) {
      clearTimeout(this.finishTimer);
      const wasClosed = this.closed;
      this.closed = true;
      this.stopAudio();
      window.__rtd.closeCode = e.code;
      // The meaning of the code, plus the server's reason when it adds something.
      const known = CLOSE_REASONS[e.code];
      const why = known ? (e.reason && e.reason !== known ? `${known}: ${e.reason}` : known) : (e.reason || "closed");
      if (e.code === 1000 && this.ending) {
        setStatus("closed", "finished");
      } else if (!wasClosed) {
        const where = this.ready ? "" : ` (${this.url})`;
        setStatus("error", `closed ${e.code}`);
        if (ui.message.hidden || ui.message.dataset.kind === "info") {
          showMessage(`connection closed${where}: ${e.code} ${why}`);
        } else {
          ui.message.textContent += ` — connection closed: ${e.code} ${why}`;
        }
      }
      endSession(this);
    }

    close(code, reason) {
      this.closed = true;
      clearTimeout(this.finishTimer);
      clearTimeout(this.endTimer);
      this.stopAudio();
      if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(code, reason);
      endSession(this);
    }

    stopAudio() {
      if (this.media) { for (const t of this.media.getTracks()) t.stop(); this.media = null; }
      if (this.node) { this.node.port.onmessage = null; this.node.disconnect(); this.node = null; }
      if (this.ctx) { this.ctx.close().catch(() => {}); this.ctx = null; }
    }
  }

  function toLittleEndian(block) {
    const out = new DataView(new ArrayBuffer(block.length * 4));
    for (let i = 0; i < block.length; i++) out.setFloat32(i * 4, block[i], true);
    return out.buffer;
  }

  function endSession(s) {
    if (session !== s) return;
    session = null;
    ui.start.disabled = false;
    ui.stop.disabled = true;
    ui.token.disabled = false;
  }

  function describeStartError(err) {
    switch (err && err.name) {
      case "NotAllowedError": return "microphone permission denied (allow it in the address bar and retry)";
      case "NotFoundError": return "no microphone found";
      case "NotReadableError": return "the microphone is busy or unavailable";
      case "OverconstrainedError": return "the microphone cannot capture mono audio";
      default: return `cannot start: ${err && err.message ? err.message : err}`;
    }
  }

  async function start() {
    if (session) return;
    resetReadouts();
    window.__rtd.summary = null;
    window.__rtd.closeCode = null;
    window.__rtd.errors.length = 0;
    const s = new Session();
    session = s;
    ui.start.disabled = true;
    ui.stop.disabled = false;
    ui.token.disabled = true;
    try {
      await s.start();
    } catch (err) {
      s.fail(describeStartError(err));
    }
  }

  function stop() {
    if (session) session.stop();
  }

  ui.start.addEventListener("click", start);
  ui.stop.addEventListener("click", stop);
  setThreshold(threshold);

  // For tests and debugging: the events received and how many points the chart drew.
  window.__rtd = {
    events,
    drawnPoints: () => chart.drawn,
    state: () => ui.status.dataset.state,
    sampleRate: () => lastRate, // of the current or last stream
    summary: null,
    closeCode: null,
    errors: [],
    start,
    stop,
  };
})();
