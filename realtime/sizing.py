"""What a run sizes to the machine it is on, and the words a server says about it at start.

``--parallel auto`` (the default): a CPU engine gets one inference worker per core this process may
use (its affinity mask: a container's cpuset or ``taskset``, not the machine's core count), keeping
one core for the event loop above 2 cores, at ``--threads`` intra-op threads each, at most
:data:`MAX_WORKERS`. A GPU or remote engine (cuda, tensorrt, triton) gets one: its speed is not the
host's cores, and the CUDA engines' static buffers take one call at a time.

Why every core on 2 cores: on the 2-core VM, busy with a niced training job (float32 SpecRNet, 20 s of
speech per stream), ``python tools/loadtest.py --streams 40 75 --seconds 20 --parallel 2 1`` scored 57.2
and 48.1 windows/s with 2 workers against 47.4 and 36.9 with 1, shedding 44 against 242 windows at 40
streams, and ``--streams 75 --parallel 1 2`` 35.9 against 30.5 (benchmarks/loadtest-parallel-*-busy-vm.json):
the event loop's share fits beside two workers. Above 2 cores a worker fewer costs a third or less of
the inference and the loop's one Python thread (network, resampling, events) keeps a core of its own
(not measured: no larger machine here).
"""
from __future__ import annotations

import os
from typing import Literal

__all__ = ["MAX_WORKERS", "usable_cores", "workers_for", "inference_workers", "describe_engine"]

#: Each worker's concurrent run keeps its own share of ONNX Runtime's arena (docs/server.md) and one
#: event loop feeds them all: beyond this, run more servers (docs/deployment.md).
MAX_WORKERS = 8

_PRECISION = {"fp32": "float32", "fp16": "float16"}


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity mask outside Linux: the machine's count
        return os.cpu_count() or 1


def workers_for(cores: int, threads: int = 1) -> int:
    """Inference workers for a CPU engine on ``cores`` cores at ``threads`` intra-op threads each."""
    spare = cores - 1 if cores > 2 else cores
    return max(1, min(MAX_WORKERS, spare // threads))


def inference_workers(engine: object, parallel: int | Literal["auto"]) -> tuple[int, str]:
    """The batcher's concurrent engine calls for ``--parallel`` (an int or ``auto``), and why, in a few words."""
    if isinstance(parallel, int):
        return parallel, f"{_plural(parallel, 'inference worker')} (--parallel {parallel})"
    device = getattr(engine, "device", None)
    if device != "cpu":  # a GPU, a Triton server, or a test's stand-in without a device
        on = f": the engine runs on {device}" if device else ""
        return 1, f"1 inference worker{on} (--parallel N sets it)"
    cores, threads = usable_cores(), getattr(engine, "threads", 1)
    n = workers_for(cores, threads)
    why = [f"{_plural(n, 'inference worker')} from {_plural(cores, 'core')}"]
    if cores > 2:
        why.append("one left to the event loop")
    if threads > 1:
        why.append(f"{threads} threads each")
    if n == MAX_WORKERS:
        why.append(f"at most {MAX_WORKERS}")
    return n, ", ".join(why) + " (--parallel N sets it)"


def describe_engine(engine: object) -> str:
    """``engine onnx (float32 on the CPU; --engine auto: ...)``: what runs, and how it was chosen."""
    device = getattr(engine, "device", "cpu")
    where = "on the CPU" if device == "cpu" else f"on {device}"
    precision = getattr(engine, "precision", None)
    what = f"{_PRECISION.get(precision, precision)} {where}" if precision else where
    choice = getattr(engine, "choice", "")
    return f"engine {getattr(engine, 'name', type(engine).__name__)} ({what}{'; ' + choice if choice else ''})"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"
