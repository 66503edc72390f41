// AudioWorklet processor: collects the (mono) input into blocks and posts each block to the
// main thread as a transferred Float32Array. Runs on the audio rendering thread, so it does
// nothing but copy: no encoding, no networking, no logging.
"use strict";

class RtdCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    // ~40 ms at 48 kHz: few enough messages per second, small enough for low latency.
    this.blockFrames = Math.max(128, opts.blockFrames | 0 || 2048);
    this.block = new Float32Array(this.blockFrames);
    this.fill = 0;
    this.running = true;
    this.port.onmessage = (e) => {
      if (e.data !== "stop") return;
      this.running = false;
      // The partial last block, marked so the main thread knows nothing follows.
      const last = this.block.slice(0, this.fill);
      this.port.postMessage({ last }, [last.buffer]);
      this.fill = 0;
    };
  }

  process(inputs) {
    const input = inputs[0];
    // No connected input yet (or the track ended): nothing to copy this quantum.
    if (!input || input.length === 0) return this.running;
    const x = input[0]; // the node is configured mono (channelCountMode "explicit", 1 channel)
    let i = 0;
    while (i < x.length) {
      const n = Math.min(x.length - i, this.blockFrames - this.fill);
      this.block.set(x.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === this.blockFrames) {
        this.port.postMessage(this.block, [this.block.buffer]);
        this.block = new Float32Array(this.blockFrames); // the posted buffer is detached
        this.fill = 0;
      }
    }
    return this.running;
  }
}

registerProcessor("rtd-capture", RtdCapture);
