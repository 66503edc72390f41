"""What the window path costs the process: N live streams through the detector, engine stubbed.

    python tools/window_path.py --streams 50 --seconds 60 --out benchmarks/window-path.json
    strace -f -c -e trace=mmap,munmap,brk python tools/window_path.py ...   # + syscalls per window

Each stream's audio goes through the real session -> windowing -> micro-batcher path, as fast as
the batcher takes it (``policy="block"``, nothing shed), in 0.1-s chunks. The engine is a stub with
the contract of ONNX SpecRNet on the CPU (64000 samples, runs of 4) returning logits of zero, so
only the realtime side is measured. Reported per window: minor page faults (a fresh 256-KB array
costs ~64: the allocator maps it and the kernel zero-fills each page on first touch), Python and
numpy bytes allocated at the peak (tracemalloc, last half of the run), and the process's RSS.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from realtime.batcher import BatcherOptions  # noqa: E402
from realtime.options import DetectorOptions, WindowingOptions  # noqa: E402
from realtime.session import LiveDetector  # noqa: E402

CHUNK = 1600  # 0.1 s at 16 kHz


class StubEngine:
    """ONNX SpecRNet's contract on the CPU, without the inference."""

    window_samples, preferred_batch, model_id, threshold = 64000, 4, "stub-00000000", 0.5

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), np.float32)

    logits = batch_logits  # the same stub for trees whose batcher calls the public entry point


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(streams: int, seconds: float, hop_s: float) -> dict:
    options = DetectorOptions(windowing=WindowingOptions(hop_s=hop_s), batching=BatcherOptions(max_batch=64))
    det = LiveDetector(StubEngine(), options).start()  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal((CHUNK * 50, 1)) * 0.1).astype(np.float32)  # 5 s, looped
    sessions = [det.open_stream(f"s{i}", 16000, policy="block") for i in range(streams)]
    chunks = int(seconds / 0.1)
    faults0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for k in range(chunks):
        if k == chunks // 2:
            tracemalloc.start()
        chunk = audio[(k % 50) * CHUNK:(k % 50 + 1) * CHUNK]
        for s in sessions:
            await s.push(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_streaming = rss_mb()
    for s in sessions:
        await s.finish()
    faults, wall = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0, time.perf_counter() - t0
    stats = det.batcher.stats()
    await det.aclose()
    del sessions
    windows = stats.scored + stats.skipped
    return {"windows": windows, "batches": stats.batches, "mean_batch": round(stats.mean_batch, 2),
            "minor_faults_per_window": round(faults / max(1, windows), 2),
            "traced_peak_mb_second_half": round(peak / 2**20, 2), "rss_mb_streaming": round(rss_streaming, 1),
            "rss_mb_after_streams_end": round(rss_mb(), 1), "windows_per_s": round(windows / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60.0, help="audio per stream")
    ap.add_argument("--hop", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = asyncio.run(run(args.streams, args.seconds, args.hop))
    report = {"meta": {"host": platform.node(), "python": platform.python_version(), "numpy": np.__version__,
                       "command": " ".join(["python", "tools/window_path.py", *(argv or sys.argv[1:])])},
              "result": result}
    print(json.dumps(result, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
