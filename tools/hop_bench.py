"""Front end once per hop: CPU ms per stream-hop, against scoring whole windows, in the same run.

    python tools/hop_bench.py                                  # both models, onnx + onnx-int8
    python tools/hop_bench.py --models specrnet --engines onnx --streams 8 --hops 20 --rounds 5
    python tools/hop_bench.py --models runs/student/best --engines onnx   # a specrnet_stream checkpoint

``--streams`` streams of real speech advance one hop at a time. Every hop, each stream's next window
is scored in batches of the engine's ``preferred_batch`` (4 on the CPU), and each batch goes through, one
after the other so all see the same background load, on one thread:

* ``frontend_graph``: the front end of model.onnx alone (its front-end view), the whole window:
  what the engine computes today before its network;
* ``frontend_numpy``: the numpy front end over the whole window (``engines.features``, every frame);
* ``frontend_hop``: the streaming front end (``engines.hop_frontend``), every window one hop after
  its stream's last (steady state; a stream's first window is computed whole, timed apart);
* ``whole_window``: the engine on the windows, today's path (model.onnx or model.int8.onnx);
* ``hop_total``: the streaming front end + the network view (network.onnx or network.int8.onnx);
* for a streaming network (``specrnet_stream``) on ``onnx``, the network once per hop
  (``engines.stream_network``): ``trunk_hop``, the trunk graph on each window's new frames (from the
  streaming front end's features), ``readout``, the readout graph on its trunk frames, and
  ``stream_total``: ``frontend_hop`` + ``trunk_hop`` + ``readout``, what the batcher runs per window.

Times are this thread's CPU time (ONNX Runtime with one intra-op thread runs on the calling thread;
BLAS is held to one thread), per stream-hop: a round's total over streams x hops. Medians over
rounds. The speech is the shared bona fide set, each stream its own recording.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads BLAS: the filterbank matmul must not fan out

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engines
from engines.checkpoint import ONNX_NAME
from engines.features import SpectralFrames, frames
from engines.frontend_config import FrontEndConfig
from engines.hop_frontend import HopFrontEnd, HopLayout
from engines.stream_network import HopNetwork, StreamGeometry

SPEECH = REPO.parent / "shared" / "data" / "bonafide"
STAGES = ("frontend_graph", "frontend_numpy", "frontend_hop", "whole_window", "hop_total")
STREAM_STAGES = ("trunk_hop", "readout", "stream_total")
T = TypeVar("T")


def nearest_hop(config: FrontEndConfig, hop_s: float) -> int:
    """The whole number of frame hops nearest ``hop_s`` (ResMax's 16-ms frames: 0.5 s -> 0.512 s)."""
    frame = config.hop_length
    return max(1, round(hop_s * config.sample_rate / frame)) * frame


def stream_audio(n_streams: int, samples: int) -> list[np.ndarray]:
    """One recording per stream from the shared manifest, tiled to ``samples``."""
    import csv

    import soundfile as sf

    with open(SPEECH / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [np.resize(sf.read(SPEECH.parent / r["path"], dtype="float32")[0], samples) for r in rows[:n_streams]]


def timed(fn: Callable[..., T], *args: object) -> tuple[float, T]:
    """(this thread's CPU ms, result) of ``fn(*args)``."""
    t0 = time.thread_time()
    out = fn(*args)
    return 1e3 * (time.thread_time() - t0), out


def frontend_session(folder: Path, scratch: Path) -> object:
    """A one-thread session of model.onnx's front end (a view must sit next to its graph)."""
    import onnxruntime as ort

    from engines.split import frontend_view

    shutil.copy(folder / ONNX_NAME, scratch / ONNX_NAME)
    frontend_view(scratch / ONNX_NAME, scratch / "frontend.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(str(scratch / "frontend.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])


def bench(model: str, engine_name: str, args: argparse.Namespace, scratch: Path) -> dict[str, object]:
    engine = engines.load(model, engine=engine_name, threads=1, split=True)
    cfg = FrontEndConfig.from_dict(engine.config.frontend)
    hop = nearest_hop(cfg, args.hop)
    layout = HopLayout.for_model(engine.config, hop)
    window, batch, n = layout.window, engine.preferred_batch, args.streams
    steps = 1 + args.hops * args.rounds
    audio = stream_audio(n, window + steps * hop)
    frontend = frontend_session(engines.resolve_model(model), scratch)
    fe = HopFrontEnd(layout)
    spectral = SpectralFrames(cfg)
    streams = [fe.stream() for _ in range(n)]
    record = getattr(engine, "stream", None)  # a streaming network's trunk and readout, loaded with split
    net = HopNetwork(StreamGeometry.from_record(record, layout), engine.trunk_frames) if record else None
    trunks = [net.stream() for _ in range(n)] if net is not None else []
    stages = STAGES + (STREAM_STAGES if net is not None else ())
    engine.warm_up()

    def numpy_whole(x: np.ndarray) -> list[np.ndarray]:
        return [spectral(frames(w, cfg, 0, layout.frames)) for w in x]

    groups = [range(i, min(i + batch, n)) for i in range(0, n, batch)]
    first, first_trunk = 0.0, 0.0
    for g in groups:
        x = np.stack([audio[s][:window] for s in g])
        ms, feats = timed(fe.features, [streams[s] for s in g], [0] * len(g), x)
        first += ms
        if net is not None:
            first_trunk += timed(net.frames, [trunks[s] for s in g], [0] * len(g), feats)[0]
    per_round: dict[str, list[float]] = {k: [] for k in stages}
    for rnd in range(args.rounds):
        totals = dict.fromkeys(stages, 0.0)
        for step in range(1 + rnd * args.hops, 1 + (rnd + 1) * args.hops):
            for g in groups:
                x = np.stack([audio[s][step * hop : step * hop + window] for s in g])
                totals["frontend_graph"] += timed(frontend.run, None, {"waveform": x})[0]
                totals["frontend_numpy"] += timed(numpy_whole, x)[0]
                ms, feats = timed(fe.features, [streams[s] for s in g], [step * hop] * len(g), x)
                totals["frontend_hop"] += ms
                totals["whole_window"] += timed(engine.logits, x)[0]
                totals["hop_total"] += ms + timed(engine.feature_logits, feats)[0]
                if net is not None:
                    trunk_ms, z = timed(net.frames, [trunks[s] for s in g], [step * hop] * len(g), feats)
                    readout_ms = timed(engine.readout_logits, z)[0]
                    totals["trunk_hop"] += trunk_ms
                    totals["readout"] += readout_ms
                    totals["stream_total"] += ms + trunk_ms + readout_ms
        for k in stages:
            per_round[k].append(totals[k] / (n * args.hops))
        print(f"round {rnd + 1}/{args.rounds} {model} {engine_name}: "
              + ", ".join(f"{k} {per_round[k][-1]:.3f}" for k in stages), flush=True)
    med = {k: round(statistics.median(v), 4) for k, v in per_round.items()}
    return {"model": model, "engine": engine_name, "hop_s": hop / cfg.sample_rate, "window_samples": window,
            "streams": n, "preferred_batch": batch, "frames_per_window": layout.frames,
            "frames_per_hop": layout.left + layout.step + layout.right,
            "stream_state_bytes": streams[0].nbytes + (trunks[0].nbytes if trunks else 0),
            "first_window_frontend_ms": round(first / n, 4), "ms_per_stream_hop": med,
            **({"first_window_trunk_ms": round(first_trunk / n, 4)} if net is not None else {}),
            "frontend_speedup_vs_graph": round(med["frontend_graph"] / med["frontend_hop"], 2),
            "total_speedup": round(med["whole_window"] / med["hop_total"], 3),
            **({"stream_speedup": round(med["whole_window"] / med["stream_total"], 3)} if net is not None else {}),
            "per_round": {k: [round(t, 4) for t in v] for k, v in per_round.items()}}


def machine() -> dict[str, object]:
    import onnxruntime

    cpu = ""
    if Path("/proc/cpuinfo").is_file():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    return {"machine": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "threads": 1,
            "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(engines.SHIPPED_MODELS))
    ap.add_argument("--engines", nargs="+", default=list(engines.split_engines()), choices=engines.split_engines())
    ap.add_argument("--hop", type=float, default=0.5, help="seconds; rounded to whole frame hops (default 0.5)")
    ap.add_argument("--streams", type=int, default=16, help="concurrent streams (default 16)")
    ap.add_argument("--hops", type=int, default=10, help="hops per stream and round (default 10)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; medians over them (default 5)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / f"hop-frontend-{platform.node() or 'host'}.json")
    args = ap.parse_args(argv)
    meta = machine()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for model in args.models:
            for name in args.engines:
                results.append(bench(model, name, args, Path(scratch)))
    print("\nCPU ms per stream-hop (median of rounds, one thread):\n")
    print("| model | engine | hop | front end: graph, whole window | numpy, whole window | per hop "
          "| whole window (today) | per-hop front end + network | per-hop front end + trunk + readout | saving |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        m = r["ms_per_stream_hop"]
        best = m.get("stream_total", m["hop_total"])
        stream = f"{m['stream_total']:.2f} ({m['trunk_hop']:.2f} + {m['readout']:.2f})" if "stream_total" in m else "-"
        print(f"| {r['model']} | {r['engine']} | {r['hop_s']:g} s | {m['frontend_graph']:.2f} | "
              f"{m['frontend_numpy']:.2f} | {m['frontend_hop']:.3f} | {m['whole_window']:.2f} | {m['hop_total']:.2f} | "
              f"{stream} | {1 - best / m['whole_window']:.0%} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta.update(streams=args.streams, hops=args.hops, rounds=args.rounds, command="python tools/hop_bench.py "
                + " ".join(sys.argv[1:] if argv is None else argv))
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
