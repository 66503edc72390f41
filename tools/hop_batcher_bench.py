"""The batcher per hop against whole windows: process CPU ms per window, in the same run, alternated.

    python tools/hop_batcher_bench.py --engine onnx --streams 8 --rounds 3 --out benchmarks/hop-batcher-2core-vm.json

``--streams`` streams of real speech (``--seconds`` each, cut by the windower at the checkpoint's hop)
go through one MicroBatcher (block policy, so nothing is shed and every window is scored) with the
front end once per hop (``realtime.hop_scoring``) and with whole windows, alternating each round.
Measured over all windows after the engine's warm-up: this process's CPU time and the wall time,
per window. tools/hop_bench.py measures the stages alone; this is the path live streams take.
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as realtime.cli does, before numpy loads

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engines
from realtime.batcher import BatcherOptions, MicroBatcher
from realtime.hop_scoring import hop_scoring
from realtime.session import model_window
from realtime.windowing import StreamWindower, Window
from tools.hop_bench import stream_audio


async def one_run(engine: engines.Engine, windows: dict[str, list[Window]], per_hop: bool,
                  parallel: int) -> tuple[float, float]:
    """(CPU ms, wall ms) per window of one pass of every stream's windows through a batcher."""
    hop = hop_scoring(engine, model_window(engine), "on")[0] if per_hop else None
    b = MicroBatcher(engine, BatcherOptions(max_pending=32, max_queue=512, parallel=parallel), hop=hop).start()
    handles = {n: b.open_stream(n, lambda r: None, policy="block") for n in windows}
    first = next(iter(windows.values()))
    handles[next(iter(windows))].submit(first[0], score=False)  # returns once the warm-up is done
    await handles[next(iter(windows))].drain()
    c0, t0 = time.process_time(), time.perf_counter()
    for j in range(1, len(first)):
        for n, h in handles.items():
            await h.wait_room()
            h.submit(windows[n][j])
    for h in handles.values():
        await h.drain()
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    await b.aclose()
    n = (len(first) - 1) * len(windows)
    return 1e3 * cpu / n, 1e3 * wall / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="specrnet")
    ap.add_argument("--engine", default="onnx", choices=engines.split_engines())
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=34.0, help="audio per stream (default 34: 61 windows)")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not 1 <= args.streams <= 64 or not 4.5 <= args.seconds <= 600 or not 1 <= args.rounds <= 20:
        ap.error("--streams 1..64, --seconds 4.5..600, --rounds 1..20")
    load = list(os.getloadavg())
    engine = engines.load(args.model, args.engine, split=True)
    win = model_window(engine)
    audio = stream_audio(args.streams, round(args.seconds * win.sample_rate))
    windows = {}
    for i, a in enumerate(audio):
        w = StreamWindower(f"s{i}", win.sample_rate, 1, win)
        windows[f"s{i}"] = [Window(x.stream, x.seq, x.start_s, x.end_s, x.samples.copy(), x.arrival)
                            for x in w.push(a[:, None])]
    runs: dict[str, list[tuple[float, float]]] = {"whole": [], "per_hop": []}
    for _ in range(args.rounds):
        for name in runs:
            runs[name].append(asyncio.run(one_run(engine, windows, name == "per_hop", args.parallel)))
    medians = {name: {"cpu_ms_per_window": round(statistics.median(c for c, _ in v), 2),
                      "wall_ms_per_window": round(statistics.median(w for _, w in v), 2)} for name, v in runs.items()}
    for name, m in medians.items():
        print(f"{name:8s} cpu {m['cpu_ms_per_window']:6.2f} ms/window  wall {m['wall_ms_per_window']:6.2f} ms/window  "
              f"(rounds: {', '.join(f'{c:.2f}' for c, _ in runs[name])})")
    if args.out is not None:
        meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                "load_average_at_start": load, "windows_per_round": (len(windows["s0"]) - 1) * args.streams,
                "command": " ".join(["python tools/hop_batcher_bench.py", *(argv if argv is not None else sys.argv[1:])])}
        result = {"model": args.model, "engine": args.engine, "parallel": args.parallel, "medians": medians,
                  "per_round": {n: [[round(c, 2), round(w, 2)] for c, w in v] for n, v in runs.items()}}
        args.out.write_text(json.dumps({"meta": meta, "results": result}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
