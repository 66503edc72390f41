"""Engine benchmark: per-window latency at batch 1 and throughput at several batch sizes.

    python tools/bench.py                      # both models, onnx + torch, 1 and 2 threads
    python tools/bench.py --models specrnet --engines onnx --threads 1 --out benchmarks/x.json
    python tools/bench.py --engines onnx onnx-int8 --threads 1 --rounds 5   # int8 against float32
    python tools/bench.py --engines cuda tensorrt --threads 1 --batches 1 8 64 256 1024 \
        --out benchmarks/gpu-h100.json         # GPU engines; the GPU's name goes into the JSON

Every call starts from float32 windows in host memory, so the host-to-device copy and the front
end are inside the GPU timings, as they are in the server.

Timing is wall clock around ``engine.score`` (validation, inference and sigmoid included) on real
speech windows. Uses the shipped weights when present, else randomly initialised checkpoints
(weights do not change the arithmetic, so timings hold; the scores mean nothing), quantized on
the shared speech for onnx-int8. ``--rounds`` repeats the whole sweep, so on a shared machine every
configuration sees the same background load; percentiles pool the calls of all rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engines  # noqa: E402


@dataclass
class Result:
    model: str
    engine: str
    threads: int
    batch: int
    p50_ms: float  # per call
    p99_ms: float
    per_window_ms: float  # p50 per call / batch
    windows_per_s: float


def checkpoint_for(arch: str, scratch: Path, int8: bool = False) -> Path:
    """The shipped weights of ``arch``, else a random-init checkpoint in ``scratch`` (quantized too with ``int8``)."""
    try:
        return engines.resolve_model(arch)
    except engines.EngineError:
        import torch

        from engines.checkpoint import save_checkpoint
        from engines.models import build_detector

        torch.manual_seed(0)
        folder = scratch / arch
        save_checkpoint(build_detector(arch).eval(), folder, architecture=arch,
                        training_data={"note": "random init for benchmarking"})
        if int8:
            from engines.quantize import QuantizeOptions, quantize_checkpoint

            quantize_checkpoint(folder, [SPEECH], QuantizeOptions(windows=16))
        return folder


SPEECH = REPO.parent / "shared" / "data" / "bonafide"


def _windows(batch: int) -> np.ndarray:
    files = sorted((SPEECH / "ljspeech").glob("*.flac"))[:4]
    if files:
        import soundfile as sf

        clips = [np.resize(sf.read(f, dtype="float32")[0], 64000) for f in files]
    else:
        clips = [np.random.default_rng(0).standard_normal(64000).astype(np.float32) * 0.1]
    return np.stack([clips[i % len(clips)] for i in range(batch)]).astype(np.float32)


def measure(engine: engines.Engine, batch: int, seconds: float, min_iters: int) -> list[float]:
    """Milliseconds per ``score`` call, after a warm-up."""
    x = _windows(batch)
    for _ in range(3):
        engine.score(x)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_iters or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        engine.score(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def _ratios(results: list[Result], slow: str, fast: str) -> dict[str, float]:
    """p50 of ``slow`` over p50 of ``fast`` per model, threads and batch."""
    p50 = {(r.model, r.engine, r.threads, r.batch): r.p50_ms for r in results}
    return {f"{m}/threads={t}/batch={b}": round(p50[(m, slow, t, b)] / p50[(m, fast, t, b)], 2)
            for (m, e, t, b) in p50 if e == fast and (m, slow, t, b) in p50}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["specrnet", "resmax"])
    ap.add_argument("--engines", nargs="+", default=["onnx", "torch"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=3.0, help="time spent per configuration and round")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the sweep, interleaving configurations (default 1)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / f"cpu-{platform.node() or 'host'}.json")
    args = ap.parse_args(argv)

    configs = [(arch, name, threads) for arch in args.models for name in args.engines for threads in args.threads]
    times: dict[tuple[str, str, int, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        try:
            folders = {arch: checkpoint_for(arch, Path(scratch), "onnx-int8" in args.engines) for arch in args.models}
            loaded = {c: engines.load(folders[c[0]], engine=c[1], threads=c[2], max_batch=max(args.batches))
                      for c in configs}
        except (engines.EngineError, engines.CheckpointError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for rnd in range(args.rounds):
            for (arch, name, threads), eng in loaded.items():
                for b in args.batches:
                    t = measure(eng, b, args.seconds, min_iters=20)
                    times.setdefault((arch, name, threads, b), []).extend(t)
                    print(f"round {rnd + 1}/{args.rounds} {arch:9s} {name:9s} threads={threads} batch={b:3d}  "
                          f"p50 {statistics.median(t):8.2f} ms", flush=True)
        for eng in loaded.values():
            eng.close()

    results: list[Result] = []
    for (arch, name, threads, b), t in times.items():
        t.sort()
        p50, p99 = statistics.median(t), t[min(len(t) - 1, int(0.99 * len(t)))]
        results.append(Result(arch, name, threads, b, round(p50, 3), round(p99, 3), round(p50 / b, 3),
                              round(1000.0 * b / p50, 1)))
    print("\n| model | engine | threads | batch | p50 ms/call | p99 ms/call | ms/window | windows/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r.model} | {r.engine} | {r.threads} | {r.batch} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
              f"{r.per_window_ms:.2f} | {r.windows_per_s:.1f} |")
    ratios = {k.removesuffix("/batch=1"): v for k, v in _ratios(results, "torch", "onnx").items()
              if k.endswith("/batch=1")}
    for key, ratio in ratios.items():
        print(f"{key} batch 1: onnx is {ratio:.2f}x faster than torch eager")
    int8_ratios = _ratios(results, "onnx", "onnx-int8")
    for key, ratio in int8_ratios.items():
        print(f"{key}: onnx-int8 is {ratio:.2f}x faster than onnx (float32)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "rounds": args.rounds, "onnx_vs_torch_batch1": ratios,
            "onnx_vs_int8": int8_ratios}
    if any(e in ("cuda", "tensorrt") for e in args.engines):
        import torch

        props = torch.cuda.get_device_properties(0)
        meta["gpu"] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    try:
        import onnxruntime
        meta["onnxruntime"] = onnxruntime.__version__
        import torch
        meta["torch"] = torch.__version__
    except ImportError:
        pass
    args.out.write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
