"""CPU cost per window through a Triton server against in-process ONNX Runtime, in the same run.

    python tools/triton_bench.py                       # SpecRNet, batches 1 4 16, 3 rounds
    python tools/triton_bench.py --batches 1 16 --rounds 5 --out benchmarks/triton-cpu.json

Starts the tritonserver bundled with nvidia-pytriton on loopback (see tools/tritonserver.py; its
Python backend runs the same model.onnx with ONNX Runtime, one instance, one thread), then
alternates the two engines over the same real speech windows, so both see the same background
load. Per window it reports wall time and CPU time: for Triton, this process (client: gRPC,
serialisation) plus the server's whole process group (server and Python stub), read from /proc.
Rounds alternate the engines; medians over rounds are reported.
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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import engines  # noqa: E402
from engines.backends.triton_backend import TritonOptions  # noqa: E402
from engines.triton_repo import RepoOptions, write_repository  # noqa: E402
from tools.tritonserver import TritonServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every live process in group ``pgid``."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "pid (comm)": state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def real_windows(n: int) -> np.ndarray:
    import soundfile as sf

    from realtime.inputs import DEMO_CLIP

    audio, sr = sf.read(DEMO_CLIP, dtype="float32")
    audio = np.resize(audio, 64000 + 8000 * n)
    return np.stack([audio[8000 * i : 8000 * i + 64000] for i in range(n)])


def measure(engine, x: np.ndarray, batch: int, pgid: int | None) -> dict[str, float]:
    calls = max(1, len(x) // batch)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    srv0 = group_cpu_s(pgid) if pgid else 0.0
    for i in range(calls):
        engine.score(x[i * batch : (i + 1) * batch])
    windows = calls * batch
    srv = (group_cpu_s(pgid) - srv0) if pgid else 0.0
    return {"wall_ms_per_window": 1e3 * (time.perf_counter() - wall0) / windows,
            "client_cpu_ms_per_window": 1e3 * (time.process_time() - cpu0) / windows,
            "server_cpu_ms_per_window": 1e3 * srv / windows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="specrnet")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--windows", type=int, default=32, help="windows per configuration and round (default 32)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    repo = Path(tempfile.mkdtemp(prefix="rtd-triton-bench-"))
    write_repository(engines.resolve_model(a.model), repo, RepoOptions(backend="python", max_batch=max(a.batches)))
    server = TritonServer(repo).start([engines.read_config(engines.resolve_model(a.model)).architecture])
    try:
        local = engines.load(a.model, "onnx", max_batch=max(a.batches))
        remote = engines.load(a.model, "triton", max_batch=max(a.batches), triton=TritonOptions(server.url, timeout_s=60))
        x = real_windows(a.windows)
        local.warm_up(), remote.warm_up()
        runs: dict[str, dict[int, list[dict[str, float]]]] = {"onnx": {}, "triton": {}}
        for _ in range(a.rounds):
            for batch in a.batches:
                runs["onnx"].setdefault(batch, []).append(measure(local, x, batch, None))
                runs["triton"].setdefault(batch, []).append(measure(remote, x, batch, server.proc.pid))
        remote.close()
    finally:
        server.close()
    rows = []
    for name, by_batch in runs.items():
        for batch, samples in by_batch.items():
            med = {k: round(statistics.median(s[k] for s in samples), 2) for k in samples[0]}
            med["total_cpu_ms_per_window"] = round(med["client_cpu_ms_per_window"] + med["server_cpu_ms_per_window"], 2)
            rows.append({"engine": name, "batch": batch, **med})
    report = {"model": a.model, "rounds": a.rounds, "windows": a.windows, "cpus": os.cpu_count(),
              "load_average_1m": round(os.getloadavg()[0], 2), "machine": platform.platform(), "results": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
