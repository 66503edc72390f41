"""Loopback load test of the WebSocket server: N concurrent real-time streams of real speech.

    python tools/loadtest.py --streams 25 50 100 --seconds 20 --threads 1 2

For each configuration a fresh server runs in a subprocess (``realtime-detect --input ws``,
ONNX SpecRNet: the shipped weights when present, else a randomly initialised checkpoint,
whose arithmetic and therefore timing is the same). N clients in this process each stream
16 kHz s16le speech from ../shared/data in 0.1-s frames at real-time pace (each starting at
a random phase of the first second), then send ``end`` and wait for the summary.

Measured:
* end-to-end latency per window, client side: the send of the frame holding the window's
  last sample -> its score event received (p50/p99 over all windows of all streams);
* the server's own ``latency_ms`` (window arrival -> score ready), p50/p99;
* shed windows (from the summaries), events dropped by the server for slow reading;
* CPU of the server process and of this load generator (from /proc, over the run);
* mean engine batch and inference busy time (from /healthz).
A stream is "sustained" when none of its windows was shed and its own p99 is <= 1 s.
Bounded: at most 1000 streams and 600 s per configuration.

Scale-out: ``--servers 1 2`` runs every configuration against one server, then against two
servers behind HAProxy (deploy/haproxy/haproxy.cfg, leastconn; apt-get install haproxy), in
the same run, so the two rows compare directly. ``--cores-per-server K`` pins server i to
cores [i*K, (i+1)*K) (the load generator and HAProxy run on any core): on a machine with
enough cores this measures what a second box would add; unpinned, both servers share the
cores and the row measures only the overhead of the proxy.

    python tools/loadtest.py --engine onnx-int8 --streams 100 150 200 --parallel 2 --servers 1 2 --cores-per-server 2
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("REALTIME_DETECT_DATA", REPO.parent / "shared" / "data"))
RATE, FRAME_S = 16000, 0.1
FRAME = int(RATE * FRAME_S)


@dataclass
class StreamResult:
    latencies_ms: list[float] = field(default_factory=list)  # client side
    server_ms: list[float] = field(default_factory=list)
    windows: int = 0
    shed: int = 0
    errors: list[str] = field(default_factory=list)
    summary: bool = False


@dataclass
class Row:
    engine: str
    streams: int
    threads: int
    parallel: int | str  # "auto": the server's default (workers from its cores)
    max_batch: int
    hop_s: float
    seconds: float
    windows: int
    windows_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_p50_ms: float
    server_p99_ms: float
    shed: int
    dropped_events: int
    sustained: int
    failed: int
    server_cpu_pct: float
    server_cpu_ms_per_window: float  # all server work (network, resampling, inference) per scored window
    client_cpu_pct: float
    mean_batch: float
    busy_pct: float
    servers: int = 1  # 1: clients connect to the server; more: through HAProxy
    hop_frontend: str = "auto"  # the server's --hop-frontend (auto: front end once per hop where it applies)
    server_says: str = ""  # its start line: the engine, precision and workers it chose, and why


def checkpoint(scratch: Path, int8: bool = False) -> Path:
    """The shipped SpecRNet, else a random-init one written to ``scratch`` (as tools/bench.py does)."""
    from tools.bench import checkpoint_for

    return checkpoint_for("specrnet", scratch, int8)


def speech_pcm(seconds: float, n_variants: int = 8) -> list[bytes]:
    """``n_variants`` different stretches of real speech, s16le, ``seconds`` long each."""
    import soundfile as sf

    files = sorted((DATA / "bonafide").rglob("*.flac"))
    if not files:
        raise SystemExit(f"no speech found under {DATA}/bonafide (set REALTIME_DETECT_DATA)")
    rng = random.Random(0)
    audio = np.concatenate([sf.read(f, dtype="float32")[0] for f in rng.sample(files, min(40, len(files)))])
    n = int(seconds * RATE)
    out = []
    for k in range(n_variants):
        start = (k * len(audio) // n_variants)
        x = np.resize(np.roll(audio, -start), n)
        out.append(np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes())
    return out


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), from /proc."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """``realtime-detect --input ws`` in a subprocess on a free loopback port; stderr kept drained."""

    def __init__(self, model: Path, *, engine: str, threads: int, hop: float, parallel: int | str, max_batch: int,
                 max_connections: int, extra: tuple[str, ...] = (), cpus: list[int] | None = None) -> None:
        self.cmd = [sys.executable, "-m", "realtime.cli", "--input", "ws", "--port", "0", "--quiet",
                    "--model", str(model), "--engine", engine, "--threads", str(threads), "--hop", str(hop),
                    "--parallel", str(parallel), "--max-batch", str(max_batch), "--max-connections",
                    str(max_connections), "--idle-timeout", "60", *extra]
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=pin)
        self.log: list[str] = []
        port: list[int] = []
        ready = threading.Event()

        def drain() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line.rstrip())
                m = re.search(r"listening on ws://[\d.]+:(\d+)/", line)
                if m:
                    port.append(int(m.group(1)))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(120) or not port:
            self.proc.kill()
            raise SystemExit("server did not start:\n" + "\n".join(self.log[-20:]))
        self.port = port[0]

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as r:
            return json.loads(r.read())

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return math.nan

    def stop(self) -> int:
        """SIGTERM (the server drains in-flight windows), then SIGKILL after 60 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def one_stream(port: int, name: str, pcm: bytes, phase: float, t0: float, res: StreamResult) -> None:
    from websockets.exceptions import WebSocketException

    try:
        await _stream(port, name, pcm, phase, t0, res)
    except (OSError, WebSocketException, TimeoutError) as e:  # refused, reset, closed: count, go on
        res.errors.append(f"{type(e).__name__}: {e}")


async def _stream(port: int, name: str, pcm: bytes, phase: float, t0: float, res: StreamResult) -> None:
    from websockets.asyncio.client import connect

    frame_bytes = FRAME * 2
    n_frames = len(pcm) // frame_bytes
    sent_at = np.zeros(n_frames)
    loop = asyncio.get_running_loop()
    async with connect(f"ws://127.0.0.1:{port}/v1/stream", compression=None, open_timeout=60,
                       close_timeout=30) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "format": "s16le", "stream": name}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            res.errors.append(str(ready))
            return

        async def receive() -> None:
            async for msg in ws:
                now = loop.time()
                ev = json.loads(msg)
                if ev["type"] == "score":
                    res.windows += 1
                    last = round(ev["end_s"] * RATE) - 1  # index of the window's last sample
                    res.latencies_ms.append((now - sent_at[last // FRAME]) * 1000.0)
                    res.server_ms.append(ev["latency_ms"])
                elif ev["type"] == "summary":
                    res.summary = True
                    res.shed = ev["shed"]
                elif ev["type"] == "error":
                    res.errors.append(ev["message"])

        rx = asyncio.create_task(receive())
        start = t0 + phase
        try:
            for k in range(n_frames):
                due = start + (k + 1) * FRAME_S  # a frame is sent when its last sample "was captured"
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[k] = loop.time()
                await ws.send(pcm[k * frame_bytes:(k + 1) * frame_bytes])
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(rx, timeout=60)
        finally:
            rx.cancel()


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else math.nan


async def run_clients(port: int, streams: int, pcms: list[bytes]) -> list[StreamResult]:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 1.0
    rng = random.Random(1)
    results = [StreamResult() for _ in range(streams)]
    await asyncio.gather(*(one_stream(port, f"load-{i}", pcms[i % len(pcms)], rng.random(), t0, results[i])
                           for i in range(streams)))
    return results


def run_one(model: Path, engine: str, streams: int, threads: int, parallel: int | str, hop: float, seconds: float,
            max_batch: int, pcms: list[bytes], servers: int = 1, cores_per_server: int = 0,
            hop_frontend: str = "auto") -> Row:
    from tools.haproxy import HAProxy

    procs: list[Server] = []
    proxy = None
    try:
        for i in range(servers):
            cpus = list(range(i * cores_per_server, (i + 1) * cores_per_server)) if cores_per_server else None
            procs.append(Server(model, engine=engine, threads=threads, hop=hop, parallel=parallel, max_batch=max_batch,
                                max_connections=streams + 8, cpus=cpus, extra=("--hop-frontend", hop_frontend)))
        if servers > 1:
            proxy = HAProxy({f"s{i}": p.port for i, p in enumerate(procs)})
            proxy.wait_all_up()
        port = proxy.port if proxy is not None else procs[0].port
        for p in procs:
            p.health()
        says = next((line.removeprefix("realtime-detect: ") for line in procs[0].log if "inference worker" in line), "")
        cpu0, me0, wall0 = sum(cpu_seconds(p.proc.pid) for p in procs), cpu_seconds(), time.monotonic()
        results = asyncio.run(run_clients(port, streams, pcms))
        wall = time.monotonic() - wall0
        cpu1, me1 = sum(cpu_seconds(p.proc.pid) for p in procs), cpu_seconds()
        healths = [p.health() for p in procs]
    finally:
        if proxy is not None:
            proxy.close()
        for p in procs:
            p.stop()
    lat = [x for r in results for x in r.latencies_ms]
    srv = [x for r in results for x in r.server_ms]
    sustained = sum(1 for r in results if r.summary and not r.errors and r.shed == 0
                    and r.latencies_ms and pct(r.latencies_ms, 99) <= 1000.0)
    failed = sum(1 for r in results if r.errors or not r.summary)
    for r in results:
        for e in r.errors[:1]:
            print(f"  stream error: {e}", file=sys.stderr)
    windows = sum(r.windows for r in results)
    return Row(engine=engine, streams=streams, threads=threads, parallel=parallel, max_batch=max_batch, hop_s=hop, seconds=seconds, windows=windows,
               windows_per_s=round(windows / wall, 1),
               p50_ms=pct(lat, 50), p99_ms=pct(lat, 99), max_ms=round(max(lat, default=math.nan), 1),
               server_p50_ms=pct(srv, 50), server_p99_ms=pct(srv, 99),
               shed=sum(r.shed for r in results), dropped_events=sum(h.get("dropped_events", 0) for h in healths),
               sustained=sustained, failed=failed,
               server_cpu_pct=round(100 * (cpu1 - cpu0) / wall, 1),
               server_cpu_ms_per_window=round(1000 * (cpu1 - cpu0) / max(1, windows), 2), client_cpu_pct=round(100 * (me1 - me0) / wall, 1),
               mean_batch=round(sum(h.get("mean_batch", 0.0) for h in healths) / len(healths), 2),
               busy_pct=round(100 * sum(h.get("busy_s", 0.0) for h in healths) / wall, 1), servers=servers,
               hop_frontend=hop_frontend, server_says=says)


def main(argv: list[str] | None = None) -> int:
    from realtime.cli_args import parallel_arg  # the server's own reading of --parallel

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--engine", default="auto",
                    help="engine of the server (default auto: what the server picks by itself; see --list-engines)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1], help="ONNX Runtime intra-op threads")
    ap.add_argument("--parallel", type=parallel_arg, nargs="+", default=["auto"],
                    help="concurrent engine calls per batch (default auto: the server's, from its cores)")
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--hop-frontend", nargs="+", choices=("auto", "on", "off"), default=["auto"],
                    help="the server's front end once per hop; 'auto off' alternates both per configuration")
    ap.add_argument("--seconds", type=float, default=20.0, help="audio per stream (default 20; the first score comes at 4 s)")
    ap.add_argument("--max-batch", type=int, default=16,
                    help="engine batch cap (default 16: on the CPU a batch costs the same per window as single "
                         "windows, so a large one only adds latency)")
    ap.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: shipped or random-init SpecRNet)")
    ap.add_argument("--servers", type=int, nargs="+", default=[1],
                    help="servers per configuration: 1 direct, more behind HAProxy (e.g. --servers 1 2 compares both)")
    ap.add_argument("--cores-per-server", type=int, default=0, metavar="K",
                    help="pin server i to cores i*K..(i+1)*K-1 (default 0: unpinned)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / f"loadtest-{platform.node() or 'host'}.json")
    args = ap.parse_args(argv)
    if any(not 1 <= s <= 1000 for s in args.streams):
        ap.error("--streams: 1..1000 each")
    if not 4.0 < args.seconds <= 600:
        ap.error("--seconds: more than 4 (one window) and at most 600")
    if any(not 1 <= n <= 8 for n in args.servers):
        ap.error("--servers: 1..8 each")
    if args.cores_per_server < 0 or args.cores_per_server * max(args.servers) > len(os.sched_getaffinity(0)):
        ap.error(f"--cores-per-server {args.cores_per_server}: needs 0..{len(os.sched_getaffinity(0)) // max(args.servers)} "
                 f"on this machine ({len(os.sched_getaffinity(0))} cores for {max(args.servers)} servers)")
    if max(args.servers) > 1 and shutil.which("haproxy") is None:
        ap.error("--servers above 1 needs haproxy (apt-get install haproxy)")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or checkpoint(Path(scratch), int8=args.engine == "onnx-int8")
        pcms = speech_pcm(args.seconds)
        for threads in args.threads:
            for parallel in args.parallel:
                for n in args.streams:
                    for servers in args.servers:
                        for hf in args.hop_frontend:
                            print(f"-- {n} streams, threads {threads}, parallel {parallel}, hop {args.hop} s, "
                                  f"{args.seconds:g} s each, {servers} server(s), hop front end {hf}", flush=True)
                            row = run_one(model, args.engine, n, threads, parallel, args.hop, args.seconds,
                                          args.max_batch, pcms, servers, args.cores_per_server, hf)
                            print("   " + json.dumps(asdict(row)), flush=True)
                            rows.append(row)
    print("\n| servers | hop front end | streams | threads | parallel | max batch | hop s | windows/s | p50 ms | p99 ms | max ms | server p50 | server p99 | shed "
          "| sustained | server CPU % | server CPU ms/window | client CPU % | mean batch | engine busy % |")
    print("| " + " | ".join(["---"] * 20) + " |")
    for r in rows:
        print(f"| {r.servers} | {r.hop_frontend} | {r.streams} | {r.threads} | {r.parallel} | {r.max_batch} | {r.hop_s:g} | {r.windows_per_s} | {r.p50_ms} | {r.p99_ms} | {r.max_ms} "
              f"| {r.server_p50_ms} | {r.server_p99_ms} | {r.shed} | {r.sustained}/{r.streams} | {r.server_cpu_pct} | {r.server_cpu_ms_per_window} "
              f"| {r.client_cpu_pct} | {r.mean_batch} | {r.busy_pct} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])}
    args.out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in rows]}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
