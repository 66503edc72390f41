"""What one live stream costs in memory on the server's path: idle, active, and after it ends.

    python tools/stream_memory.py                                      # specrnet + resmax, onnx, 50 and 200 streams
    python tools/stream_memory.py --models resmax --hop 0.512          # ResMax per hop (0.5 s is not 16-ms frames)
    python tools/stream_memory.py --engines onnx onnx-int8 --streams 20 --rate 8000   # telephony rate: soxr per stream
    python tools/stream_memory.py --models specrnet --streams 50 --rounds 5           # does what stays level off?

For each model and engine the detector is built as ``realtime-detect --input ws`` builds it (the engine
loaded with the server's split request, the batcher's per-hop front end where it applies, glibc's mmap
threshold pinned as the server pins it), and N streams are opened on it as the server opens one for a
client's ``start`` (``LiveDetector.open_stream``), policy ``block`` and fed in waves that fit the
batcher's queue, so that nothing is shed even on a busy machine:

  idle     opened, no audio yet: nothing scored;
  active   after one window and one hop of noise (4.5 s): its first window scored whole, the next one
           per hop, every result delivered: the ring written through and the stream's frames made;
  closed   every stream finished (its last windows, its summary) and dropped.

Two answers per stream:

  computed  every numpy buffer one stream's objects hold, found by walking its attributes (session,
            windower, ring, batcher handle, frames, alert state) and stopping at what streams share
            (detector, batcher, engine, front end); each buffer once, by where it was found. C state
            that is not a numpy array (soxr's resampler at --rate 8000) is not in it.
  measured  growth of the process's RSS (/proc) and of what tracemalloc traces (Python and numpy
            allocations, resident or not) from before the N streams opened, divided by N, and what
            is left of it once they closed. A warm-up round of N streams comes first, so one-time
            costs (ONNX Runtime's arena, the batcher's buffer pool) are not counted per stream; RSS
            and tracemalloc are measured in separate rounds (tracing itself costs memory).

Why RSS and traced bytes differ: numpy takes a new ring from calloc, which glibc maps (blocks of 128 KB
and up, pinned) without touching its pages: an idle stream's ring is allocated but not resident until
audio is written into it. A stream's frames (127 KB for SpecRNet) sit just under the mmap threshold, on
the heap: freed on close, though the heap may keep the pages for its next streams.

Prints a table and writes JSON (the command, the machine: cores, CPU model, load, and the date) to --out.
Not the WebSocket side: a server connection also holds its socket, its outbox and the library's buffers
(docs/server.md, Memory).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as realtime.cli: before numpy loads its BLAS

import argparse
import asyncio
import datetime
import gc
import json
import platform
import sys
import tracemalloc
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engines  # noqa: E402
from engines.hop_frontend import HopFrontEnd, HopLayout, StreamFrames  # noqa: E402
from realtime.batcher import MicroBatcher  # noqa: E402
from realtime.hop_scoring import HopScoring  # noqa: E402
from realtime.options import DetectorOptions, EngineOptions, WindowingOptions  # noqa: E402
from realtime.process_limits import pin_mmap_threshold  # noqa: E402
from realtime.ringbuffer import RingBuffer  # noqa: E402
from realtime.run import load_engine  # noqa: E402
from realtime.session import LiveDetector, StreamSession  # noqa: E402
from tools.hop_bench import machine  # noqa: E402
from tools.window_path import rss_mb  # noqa: E402

#: What every stream shares: the walk of one stream's objects stops here.
SHARED = (LiveDetector, MicroBatcher, engines.Engine, HopScoring, HopFrontEnd, HopLayout, asyncio.AbstractEventLoop,
          type, ModuleType, FunctionType, BuiltinFunctionType, MethodType)
SCALARS = (int, float, complex, str, bytes, bool, type(None))
#: Per-stream objects counted alive after the streams closed: each must be 0.
PER_STREAM = (StreamSession, RingBuffer, StreamFrames)


def stream_buffers(session: StreamSession) -> dict[str, int]:
    """nbytes of every numpy buffer ``session`` holds, by the attribute path where it was found.

    A view counts as the array that owns its memory, named by that array's own path where the walk
    reaches it (the ring's read-only alias is the ring, ``..._ring._buf``)."""
    owners: dict[int, tuple[str, int]] = {}  # id of the array owning the memory -> (path, nbytes)
    seen: set[int] = set()
    todo: list[tuple[str, object]] = [("session", session)]
    while todo:
        path, obj = todo.pop()
        if id(obj) in seen or isinstance(obj, SHARED + SCALARS):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            owner = obj
            while isinstance(owner.base, np.ndarray):
                owner = owner.base
            if owner is obj or id(owner) not in owners:  # named by the owner's own path where it is found
                owners[id(owner)] = (path, owner.nbytes)
            continue
        todo.extend(_children(path, obj))
    return dict(sorted(owners.values()))


def _children(path: str, obj: object) -> Iterator[tuple[str, object]]:
    if isinstance(obj, dict):
        yield from ((f"{path}[{k!r}]", v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, deque, set, frozenset)):
        yield from ((f"{path}[{i}]", v) for i, v in enumerate(obj))
    else:
        names = set(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            slots = getattr(cls, "__slots__", ())
            names.update((slots,) if isinstance(slots, str) else slots)
        for name in sorted(names - {"__dict__", "__weakref__"}):
            if hasattr(obj, name):
                yield f"{path}.{name}", getattr(obj, name)


def _alive() -> dict[str, int]:
    gc.collect()
    counts = dict.fromkeys((t.__name__ for t in PER_STREAM), 0)
    for o in gc.get_objects():
        if type(o) in PER_STREAM:  # type(): isinstance would wake lazy module attributes
            counts[type(o).__name__] += 1
    return counts


async def _waves(sessions: list[StreamSession], size: int,
                 step: Callable[[StreamSession], Awaitable[object]]) -> None:
    """``step`` on every session, ``size`` at once, each wave's results all delivered before the next
    (no timing bound: a busy machine is slow). Nothing here keeps a session once it returns."""
    for i in range(0, len(sessions), size):
        wave = sessions[i:i + size]
        await asyncio.gather(*map(step, wave))
        while any(s.in_flight for s in wave):
            await asyncio.sleep(0.01)


async def _round(detector: LiveDetector, n: int, rate: int, probe: Callable[[], float],
                 buffers: dict[str, dict[str, int]] | None = None) -> dict[str, dict[str, float]]:
    """``probe()`` and the batcher's shared pool before, with N idle streams, with N active ones and
    after they closed; ``buffers`` gets stream 0's computed buffers, idle and active."""
    w = detector.window
    seconds = (w.window + w.hop) / w.sample_rate
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((round(seconds * rate), 1)) * 0.1).astype(np.float32)  # over the speech gate

    def sample() -> dict[str, float]:
        return {"bytes": probe(), "pool": detector.batcher.stats().pool_bytes}

    gc.collect()
    out = {"before": sample()}
    sessions = [detector.open_stream(f"s{i}", rate, policy="block") for i in range(n)]
    out["idle"] = sample()
    if buffers is not None:
        buffers["idle"] = stream_buffers(sessions[0])
    # In waves that fit the batcher's queue: a full queue sheds even a "block" stream's oldest window.
    await _waves(sessions, detector.options.batching.max_queue // 2, lambda s: s.push(audio))
    out["active"] = sample()
    out["active"]["scored"] = sum(s.counters.scored for s in sessions)
    if buffers is not None:
        buffers["active"] = stream_buffers(sessions[0])
    await _waves(sessions, detector.options.batching.max_queue // 2, lambda s: s.finish())
    del sessions
    await asyncio.sleep(0)  # the loop lets go of the finished tasks and their summaries
    gc.collect()
    out["closed"] = sample()
    return out


def _traced() -> float:
    return float(tracemalloc.get_traced_memory()[0])


def _growth(m: dict[str, dict[str, float]], streams: int, less_pool: bool) -> dict[str, float]:
    """Per stream, idle and active, and in all once closed: growth from before, less the shared pool's
    own growth where that is exact (traced bytes: the pool's arrays are traced as allocated)."""
    def grown(at: str) -> float:
        d = m[at]["bytes"] - m["before"]["bytes"]
        return d - (m[at]["pool"] - m["before"]["pool"]) if less_pool else d

    return {"idle": round(grown("idle") / streams), "active": round(grown("active") / streams),
            "left_after_close_total": round(grown("closed")),
            "pool_growth_total": {k: m[k]["pool"] - m["before"]["pool"] for k in ("idle", "active", "closed")}}


async def measure(model: str, engine: str, streams: int, hop_s: float | None = None, rate: int = 16000,
                  rounds: int = 1) -> dict:
    """One model and engine: computed bytes per stream, and RSS / traced growth for ``streams`` streams
    (RSS over ``rounds`` rounds after the warm-up: whether what stays after them levels off)."""
    options = DetectorOptions(engine=EngineOptions(model=model, engine=engine), windowing=WindowingOptions(hop_s=hop_s))
    eng = load_engine(options)
    detector = LiveDetector(eng, options).start()
    buffers: dict[str, dict[str, int]] = {}
    try:
        # Warm-up (the arena, the pool, lazy imports), where the walk's own allocations do not count.
        first = await _round(detector, streams, rate, lambda: rss_mb() * 2**20, buffers)
        by_round = [await _round(detector, streams, rate, lambda: rss_mb() * 2**20) for _ in range(rounds)]
        rss = by_round[0]
        tracemalloc.start()
        try:
            traced = await _round(detector, streams, rate, _traced)
        finally:
            tracemalloc.stop()
        alive = _alive()
    finally:
        await detector.aclose()
        eng.close()
    return {"model": model, "engine": eng.name, "hop_s": detector.window.hop_s, "rate": rate, "streams": streams,
            "scoring": detector.scoring, "workers": detector.batcher.workers,
            "windows_scored_when_active": int(traced["active"]["scored"]),
            "computed_bytes": {k: sum(v.values()) for k, v in buffers.items()}, "computed_buffers": buffers,
            "rss_bytes_per_stream": _growth(rss, streams, less_pool=False),
            "traced_bytes_per_stream": _growth(traced, streams, less_pool=True),
            "rss_mb": {k: round(v["bytes"] / 2**20, 1) for k, v in rss.items()},
            # The process's first N streams: what stays after them is high-water marks (the shared pool,
            # released after 30 s idle; ONNX Runtime's arena; the heap), not per-stream state.
            "first_round_rss_mb": {k: round(v["bytes"] / 2**20, 1) for k, v in first.items()},
            "rss_mb_left_after_close_by_round": [round((m["closed"]["bytes"] - m["before"]["bytes"]) / 2**20, 1)
                                                 for m in by_round],
            "pool_mb_when_active": round(rss["active"]["pool"] / 2**20, 1),
            "alive_after_close": alive}


def _kb(b: float) -> str:
    return f"{b / 1000:.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(engines.SHIPPED_MODELS),
                    help=f"shipped model names or checkpoint folders (default: {' '.join(engines.SHIPPED_MODELS)})")
    ap.add_argument("--engines", nargs="+", default=["onnx"], choices=engines.split_engines(),
                    help="CPU engines (default: onnx; onnx-int8 holds the same per-stream state)")
    ap.add_argument("--streams", type=int, nargs="+", default=[50, 200],
                    help="streams open at once, one measurement each (default: 50 200)")
    ap.add_argument("--hop", type=float, default=None,
                    help="seconds between windows (default: each checkpoint's, 0.5 s; ResMax scores whole windows "
                         "there: 0.512 s gives it the per-hop front end)")
    ap.add_argument("--rate", type=int, default=16000, help="the streams' sample rate (default 16000: no resampler)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="RSS rounds after the warm-up (default 1; more: does what stays after closing level off?)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / f"stream-memory-{platform.node() or 'host'}.json")
    args = ap.parse_args(argv)
    if any(not 1 <= n <= 2000 for n in args.streams):
        ap.error("--streams: 1..2000 each")
    if not 1 <= args.rounds <= 20:
        ap.error("--rounds: 1..20")
    pin_mmap_threshold()  # as run_server: freed streams go back to the system
    meta = machine()
    meta.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command=" ".join(["python tools/stream_memory.py", *(sys.argv[1:] if argv is None else argv)]))
    results = [asyncio.run(measure(m, e, n, args.hop, args.rate, args.rounds))
               for m in args.models for e in args.engines for n in args.streams]
    print("\nKB (1000 B) per stream. computed: the numpy buffers one stream holds; traced (less the batcher's shared "
          "pool of batch buffers) and RSS: growth over N streams / N; left: what stayed once they closed, in all; "
          "pool: the shared pool's growth by then.\n")
    print("| model | engine | hop s | scoring | N | computed idle | computed active | traced idle | traced active "
          "| RSS idle | RSS active | traced left | RSS left | pool | alive after close |")
    print("| " + " | ".join(["---"] * 15) + " |")
    for r in results:
        c, t, s = r["computed_bytes"], r["traced_bytes_per_stream"], r["rss_bytes_per_stream"]
        alive = ", ".join(f"{k} {v}" for k, v in r["alive_after_close"].items())
        print(f"| {r['model']} | {r['engine']} | {r['hop_s']:g} | {r['scoring'].split(' (')[0].split(':')[0]} "
              f"| {r['streams']} | {_kb(c['idle'])} | {_kb(c['active'])} | {_kb(t['idle'])} | {_kb(t['active'])} "
              f"| {_kb(s['idle'])} | {_kb(s['active'])} | {_kb(t['left_after_close_total'])} "
              f"| {_kb(s['left_after_close_total'])} | {_kb(s['pool_growth_total']['closed'])} | {alive} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
