"""Defaults sized to the machine (realtime.sizing): inference workers from the cores this process may
use, said at start with the engine and how it was chosen; the one place int8 would become auto's pick."""
from __future__ import annotations

import os

import numpy as np
import pytest

import engines
from engines.checkpoint import read_config
from realtime.batcher import BatcherOptions, MicroBatcher
from realtime.sizing import (
    MAX_WORKERS,
    describe_engine,
    inference_workers,
    usable_cores,
)
from tests.server_process import ServerProcess


class CpuEngine:
    """What the sizing reads of an engine: where it runs and its intra-op threads."""

    window_samples, preferred_batch = 16, 4

    def __init__(self, device: str | None = "cpu", threads: int = 1) -> None:
        self.device, self.threads = device, threads

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), np.float32)


def _cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(n)))


@pytest.mark.parametrize(("cores", "threads", "workers"), [
    (1, 1, 1), (2, 1, 2), (3, 1, 2), (4, 1, 3), (16, 1, MAX_WORKERS), (64, 1, MAX_WORKERS),
    (4, 2, 1), (9, 2, 4), (2, 4, 1),
])
def test_workers_come_from_the_cores_this_process_may_use(monkeypatch, cores: int, threads: int, workers: int) -> None:
    _cores(monkeypatch, cores)
    assert usable_cores() == cores
    n, why = inference_workers(CpuEngine(threads=threads), "auto")
    assert n == workers
    assert why.startswith(f"{workers} inference worker{'s' if workers > 1 else ''} from {cores} core")
    assert why.endswith("(--parallel N sets it)")
    assert ("one left to the event loop" in why) == (cores > 2)


def test_an_explicit_parallel_or_a_non_cpu_engine_is_not_sized_from_the_cores(monkeypatch) -> None:
    _cores(monkeypatch, 8)
    assert inference_workers(CpuEngine(), 3) == (3, "3 inference workers (--parallel 3)")
    assert inference_workers(CpuEngine(device="cuda"), "auto") == (
        1, "1 inference worker: the engine runs on cuda (--parallel N sets it)")
    assert inference_workers(CpuEngine(device=None), "auto")[0] == 1  # a stand-in that says nothing


def test_the_batcher_resolves_auto_once(monkeypatch) -> None:
    _cores(monkeypatch, 2)
    b = MicroBatcher(CpuEngine(), BatcherOptions())
    assert b.options.parallel == 2 and b.workers == "2 inference workers from 2 cores (--parallel N sets it)"
    assert b._batch == 8  # two calls of the engine's preferred 4
    for bad in (0, "many", True, 1.5):
        with pytest.raises(ValueError, match="parallel must be an integer >= 1 or 'auto'"):
            BatcherOptions(parallel=bad)  # type: ignore[arg-type]


def test_auto_takes_int8_first_only_where_the_checkpoint_records_it_within_tolerance(tmp_path) -> None:
    import shutil

    from engines.checkpoint import write_config

    config = read_config(engines.resolve_model("specrnet"))
    within = (config.int8 or {}).get("protocol", {}).get("within_tolerance", False)
    plain = engines.load("specrnet")
    assert plain.name == ("onnx-int8" if within else "onnx")  # no GPU in CI: the first that runs here
    # A copy whose int8 record says the opposite, then both verdicts: auto follows the record.
    ckpt = tmp_path / "m"
    shutil.copytree(engines.resolve_model("specrnet"), ckpt)
    for verdict in (False, True):
        config.int8 = {**config.int8, "protocol": {"within_tolerance": verdict, "tolerance": 0.01}}
        write_config(ckpt, config)
        if not verdict:
            assert engines.auto_order(config) == ["tensorrt", "cuda", "onnx", "torch"]
            assert describe_engine(engines.load(ckpt)) == ("engine onnx (float32 on the CPU; --engine auto: the "
                                                           "first of tensorrt, cuda, onnx, torch that runs here)")
        else:
            assert engines.auto_order(config) == ["tensorrt", "cuda", "onnx-int8", "onnx", "torch"]
            assert describe_engine(engines.load(ckpt)) == (
                "engine onnx-int8 (int8 on the CPU; --engine auto: the first of tensorrt, cuda, onnx-int8, onnx, "
                "torch that runs here; its int8 network kept float32's EER within 1 point on the generalization protocol)")
    assert describe_engine(engines.load(ckpt, "onnx")) == "engine onnx (float32 on the CPU; --engine onnx)"


def test_a_server_with_the_defaults_says_what_it_chose_and_why() -> None:
    """The CLI without --engine or --parallel, pinned to one core of the machine's: its start lines say
    what it chose from that core (the affinity mask, not the machine's count) before it listens."""
    one = min(os.sched_getaffinity(0))
    with ServerProcess(engines.resolve_model("specrnet"), "--engine", "auto", cpus={one}) as server:
        chosen = next(line for line in server.log if "inference worker" in line)
        # The shipped SpecRNet's int8 record holds the protocol's verdict (within tolerance): int8 on the CPU.
        assert chosen == ("realtime-detect: engine onnx-int8 (int8 on the CPU; --engine auto: the first of tensorrt, "
                          "cuda, onnx-int8, onnx, torch that runs here; its int8 network kept float32's EER within 1 "
                          "point on the generalization protocol), 1 inference worker from 1 core (--parallel N sets "
                          "it); front end once per hop (127 KB per stream)")
        assert server.log.index(chosen) < next(i for i, line in enumerate(server.log) if "listening on" in line)
        assert server.stop() == 0
