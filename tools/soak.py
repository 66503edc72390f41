"""Loopback soak test of the WebSocket server: N streams for T minutes, with random disconnects.

    python tools/soak.py --streams 50 --minutes 30              # the target run
    python tools/soak.py --streams 10 --minutes 10 --hop 1.0    # what a shared 2-core box sustains

One server runs in a subprocess (``realtime-detect --input ws --events FILE.jsonl``, ONNX
SpecRNet: the shipped weights, else a randomly initialised checkpoint with the same cost).
N client slots in this process each loop until the deadline: connect (a new stream id each
time), stream real speech at real-time pace in 0.1-s frames for a random 15..90 s, then
either send ``end`` and wait for the summary or, with probability ``--disconnect`` (default
0.3), drop the TCP connection without a word; pause 0..2 s; reconnect.

Reported (JSON under benchmarks/, and a table on stdout):
* memory: the server's RSS (from /proc) every 10 s; growth = median RSS over the last
  window minus the median over the first window after a 60-s warm-up; and the slope over the
  second half (a leak keeps climbing, a high-water mark levels off);
* latency: client-side (the send of the frame with a window's last sample -> its score
  received) and server-side (``latency_ms``) p50/p99, overall and over the first and last
  ``min(5 min, T/3)``; drift = p99 last / p99 first - 1;
* shed windows (summaries), error events by code, client exceptions;
* lost events: every score event a client received must be in the event log, identical, and
  every stream that got ``ready`` must have a summary (or ``empty_stream`` error) in the log.
Targets (``pass``): RSS growth <= 50 MB, client p99 drift <= 20 %, zero lost events.
Bounded: at most 1000 streams and 24 hours; loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.loadtest import Server, checkpoint, cpu_seconds, pct, speech_pcm  # noqa: E402

RATE, FRAME_S = 16000, 0.1
FRAME = int(RATE * FRAME_S)
TARGET_RSS_MB, TARGET_DRIFT, WARMUP_S = 50.0, 0.20, 60.0


@dataclass
class Connection:
    stream: str
    ready: bool = False
    ended: bool = False  # sent "end" and got the summary
    dropped: bool = False  # we cut it mid-stream
    scores: dict[int, dict] = field(default_factory=dict)  # seq -> event as received


@dataclass
class Tally:
    connections: list[Connection] = field(default_factory=list)
    latency: list[tuple[float, float, float]] = field(default_factory=list)  # (t, client ms, server ms)
    client_errors: Counter = field(default_factory=Counter)
    error_events: Counter = field(default_factory=Counter)


async def session(port: int, conn: Connection, pcm: bytes, seconds: float, drop: bool, t0: float,
                  tally: Tally) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    n_frames = int(seconds / FRAME_S)
    offset = random.randrange(0, max(1, len(pcm) // (2 * FRAME) - n_frames)) * FRAME * 2
    sent_at = np.full(n_frames, np.nan)
    async with connect(f"ws://127.0.0.1:{port}/v1/stream", compression=None, open_timeout=60,
                       close_timeout=10) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": RATE, "format": "s16le", "stream": conn.stream}))

        async def receive() -> None:
            try:
                await _receive()
            except ConnectionClosed:  # ours was cut: what arrived is counted
                pass

        async def _receive() -> None:
            async for msg in ws:
                now = loop.time()
                ev = json.loads(msg)
                kind = ev["type"]
                if kind == "ready":
                    conn.ready = True
                elif kind == "score":
                    conn.scores[ev["seq"]] = ev
                    k = (round(ev["end_s"] * RATE) - 1) // FRAME
                    if 0 <= k < n_frames and not math.isnan(sent_at[k]):
                        tally.latency.append((now - t0, (now - sent_at[k]) * 1000.0, ev["latency_ms"]))
                elif kind == "summary":
                    conn.ended = True
                elif kind == "error":
                    tally.error_events[ev["code"]] += 1

        rx = asyncio.create_task(receive())
        start = loop.time()
        try:
            for k in range(n_frames):
                delay = start + (k + 1) * FRAME_S - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[k] = loop.time()
                await ws.send(pcm[offset + k * FRAME * 2:offset + (k + 1) * FRAME * 2])
            if drop:
                conn.dropped = True
                await asyncio.sleep(random.uniform(0, 1.0))  # some scores in flight
                ws.transport.abort()  # no close frame, no end: the client vanished
                return
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(rx, timeout=60)
        finally:
            rx.cancel()


async def slot(i: int, port: int, pcms: list[bytes], deadline: float, t0: float, args: argparse.Namespace,
               tally: Tally) -> None:
    from websockets.exceptions import WebSocketException

    loop = asyncio.get_running_loop()
    await asyncio.sleep(random.uniform(0, 2.0))  # spread the first connections
    k = 0
    while loop.time() < deadline - 5:
        seconds = min(random.uniform(15, 90), deadline - loop.time())
        conn = Connection(stream=f"soak-{i}-{k}")
        tally.connections.append(conn)
        k += 1
        try:
            await session(port, conn, pcms[i % len(pcms)], seconds, random.random() < args.disconnect, t0, tally)
        except (OSError, WebSocketException, TimeoutError) as e:
            tally.client_errors[type(e).__name__] += 1
        await asyncio.sleep(random.uniform(0, 2.0))


async def sample(server: Server, deadline: float, t0: float, rss: list[tuple[float, float]],
                 health: list[dict]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        rss.append((loop.time() - t0, server.rss_mb()))
        try:
            health.append(await loop.run_in_executor(None, server.health))
        except OSError as e:
            health.append({"error": str(e)})
        await asyncio.sleep(10)


def check_log(events_file: Path, tally: Tally) -> dict:
    logged: dict[tuple[str, int], dict] = {}
    summaries: dict[str, dict] = {}
    empty: set[str] = set()
    bad_lines = 0
    codes: Counter = Counter()
    with open(events_file) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                bad_lines += 1
                continue
            if ev["type"] == "score":
                logged[(ev["stream"], ev["seq"])] = ev
            elif ev["type"] == "summary":
                summaries[ev["stream"]] = ev
            elif ev["type"] == "error":
                codes[ev["code"]] += 1
                if ev["code"] == "empty_stream":
                    empty.add(ev.get("stream"))
    lost = mismatched = received = 0
    no_summary = []
    for c in tally.connections:
        for seq, ev in c.scores.items():
            received += 1
            got = logged.get((c.stream, seq))
            if got is None:
                lost += 1
            elif got != ev:
                mismatched += 1
        if c.ready and c.stream not in summaries and c.stream not in empty:
            no_summary.append(c.stream)
    return {"received_scores": received, "logged_scores": len(logged), "lost_scores": lost,
            "mismatched_scores": mismatched, "streams_without_summary": len(no_summary),
            "examples_without_summary": no_summary[:5], "unparsable_lines": bad_lines,
            "logged_summaries": len(summaries), "shed_windows": sum(s["shed"] for s in summaries.values()),
            "error_events_logged": dict(codes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--disconnect", type=float, default=0.3, help="share of sessions cut without 'end' (default 0.3)")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--engine", default="onnx", help="engine of the server (default onnx)")
    ap.add_argument("--threads", type=int, default=1, help="inference threads per engine call (default 1)")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--hop-frontend", choices=("auto", "on", "off"), default="auto",
                    help="the server's front end once per hop (default auto: where the engine supports it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: shipped or random-init SpecRNet)")
    ap.add_argument("--out", type=Path, default=None, help="report (default benchmarks/soak-<host>.json)")
    args = ap.parse_args(argv)
    if not 1 <= args.streams <= 1000:
        ap.error(f"--streams {args.streams}: 1..1000")
    if not 1 <= args.minutes <= 24 * 60:
        ap.error(f"--minutes {args.minutes}: 1..1440")
    if not 0 <= args.disconnect <= 1:
        ap.error(f"--disconnect {args.disconnect}: a probability")
    random.seed(args.seed)
    out = args.out or REPO / "benchmarks" / f"soak-{platform.node() or 'host'}.json"
    duration = args.minutes * 60
    period = min(300.0, duration / 3)
    tally, rss, health = Tally(), [], []
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or checkpoint(Path(scratch), int8=args.engine == "onnx-int8")
        events = Path(scratch) / "events.jsonl"
        pcms = speech_pcm(120.0, n_variants=8)
        server = Server(model, engine=args.engine, threads=args.threads, hop=args.hop, parallel=args.parallel,
                        max_batch=args.max_batch, max_connections=args.streams + 16,
                        extra=("--events", str(events), "--hop-frontend", args.hop_frontend))
        print(f"soak: {args.streams} streams x {args.minutes:g} min, hop {args.hop} s, server pid {server.proc.pid}",
              flush=True)

        async def run() -> None:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            deadline = t0 + duration
            sampler = asyncio.create_task(sample(server, deadline, t0, rss, health))
            await asyncio.gather(*(slot(i, server.port, pcms, deadline, t0, args, tally) for i in range(args.streams)))
            await sampler

        cpu0, wall0 = cpu_seconds(server.proc.pid), time.monotonic()
        try:
            asyncio.run(run())
            cpu = cpu_seconds(server.proc.pid) - cpu0
            final_health = server.health()
        finally:
            rc = server.stop()
        wall = time.monotonic() - wall0
        log = check_log(events, tally)

    lat = tally.latency
    first = [c for t, c, _ in lat if t <= period]
    last = [c for t, c, _ in lat if t >= duration - period]
    srv_first = [s for t, _, s in lat if t <= period]
    srv_last = [s for t, _, s in lat if t >= duration - period]
    base = [m for t, m in rss if WARMUP_S <= t <= WARMUP_S + period] or [m for _, m in rss[:3]]
    end = [m for t, m in rss if t >= duration - period]
    growth = float(np.median(end) - np.median(base)) if base and end else math.nan
    # A leak keeps climbing; a high-water mark (allocator, ONNX Runtime's arena) levels off.
    half = [(t, m) for t, m in rss if t >= duration / 2]
    slope = float(np.polyfit([t for t, _ in half], [m for _, m in half], 1)[0] * 60) if len(half) >= 3 else math.nan
    drift = pct(last, 99) / pct(first, 99) - 1 if first and last else math.nan
    lost = log["lost_scores"] + log["mismatched_scores"] + log["streams_without_summary"] + log["unparsable_lines"]
    result = {
        "streams": args.streams, "minutes": args.minutes, "hop_s": args.hop, "wall_s": round(wall, 1),
        "connections": len(tally.connections), "dropped_by_client": sum(c.dropped for c in tally.connections),
        "ended_normally": sum(c.ended for c in tally.connections),
        "rss_mb": {"first": round(rss[0][1], 1) if rss else None, "baseline_median": round(float(np.median(base)), 1),
                   "end_median": round(float(np.median(end)), 1), "max": round(max(m for _, m in rss), 1),
                   "growth": round(growth, 1), "second_half_slope_mb_per_min": round(slope, 2)},
        "latency_ms": {"windows": len(lat), "p50": pct([c for _, c, _ in lat], 50), "p99": pct([c for _, c, _ in lat], 99),
                       "p99_first": pct(first, 99), "p99_last": pct(last, 99), "p99_drift_pct": round(100 * drift, 1),
                       "server_p99_first": pct(srv_first, 99), "server_p99_last": pct(srv_last, 99),
                       "period_s": period},
        "shed_windows": log["shed_windows"], "error_events": dict(tally.error_events),
        "client_errors": dict(tally.client_errors), "event_log": log,
        "server": {"exit": rc, "cpu_pct": round(100 * cpu / wall, 1), "health": final_health,
                   "log_warnings": sum(" refused " in line or "WARNING" in line for line in server.log),
                   "tracebacks": sum("Traceback" in line for line in server.log)},
        "targets": {"rss_growth_mb": TARGET_RSS_MB, "p99_drift_pct": 100 * TARGET_DRIFT, "lost_events": 0},
    }
    result["pass"] = bool(growth <= TARGET_RSS_MB and drift <= TARGET_DRIFT and lost == 0)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "command": " ".join(["python tools/soak.py", *(argv if argv is not None else sys.argv[1:])]),
            "server_command": " ".join(Path(a).name if a == sys.executable else a for a in server.cmd[1:]),
            "rss_samples": [(round(t), round(m, 1)) for t, m in rss]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "result": result}, indent=2) + "\n")
    r = result
    print(f"connections {r['connections']} ({r['dropped_by_client']} cut by the client), "
          f"windows {r['latency_ms']['windows']}, shed {r['shed_windows']}")
    print(f"RSS {r['rss_mb']['baseline_median']} -> {r['rss_mb']['end_median']} MB (growth {r['rss_mb']['growth']} MB, "
          f"target <= {TARGET_RSS_MB:g})")
    print(f"client p99 {r['latency_ms']['p99_first']} -> {r['latency_ms']['p99_last']} ms "
          f"(drift {r['latency_ms']['p99_drift_pct']} %, target <= {100 * TARGET_DRIFT:g} %)")
    print(f"lost events {lost} (received {log['received_scores']} scores, logged {log['logged_scores']}); "
          f"errors {r['error_events']}, client errors {r['client_errors']}")
    print(f"{'PASS' if result['pass'] else 'FAIL'}; wrote {out}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
