"""MicroBatcher: order, batching, shedding, engine errors, backpressure, drain."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from realtime.batcher import BatcherClosedError, BatcherOptions, MicroBatcher, WindowResult
from realtime.windowing import Window

N = 64  # tiny windows: the mechanics do not depend on the length


class FakeEngine:
    """logit = first sample of each window; optionally held at a gate, or failing."""

    window_samples = N
    preferred_batch = 64  # no cap of its own: the batcher's max_batch decides

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.fail_next = False

    def batch_logits(self, x: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.gate.wait(5)
        self.batches.append(len(x))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("simulated engine failure")
        return x[:, 0].copy()


def win(stream: str, seq: int, value: float | None = None) -> Window:
    v = seq / 1000 if value is None else value
    return Window(stream, seq, seq * 0.5, seq * 0.5 + 4.0, np.full(N, v, np.float32), time.monotonic())


class Collector:
    def __init__(self) -> None:
        self.results: list[WindowResult] = []

    def __call__(self, r: WindowResult) -> None:
        self.results.append(r)

    @property
    def seqs(self) -> list[int]:
        return [r.window.seq for r in self.results]

    def statuses(self) -> list[str]:
        return [r.status for r in self.results]


async def until(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.002)


def test_options_validated() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatcherOptions(max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatcherOptions(max_wait_ms=-1)
    with pytest.raises(ValueError, match="max_pending"):
        BatcherOptions(max_pending=True)  # type: ignore[arg-type]


def test_interleaved_streams_come_back_in_order_with_their_scores() -> None:
    async def main() -> None:
        eng = FakeEngine()
        b = MicroBatcher(eng, BatcherOptions(max_batch=4, max_wait_ms=1)).start()
        cols = {name: Collector() for name in "abc"}
        streams = {name: b.open_stream(name, cols[name]) for name in "abc"}
        for seq in range(7):
            for name, st in streams.items():
                st.submit(win(name, seq))
            await asyncio.sleep(0)
        await until(lambda: all(len(c.results) == 7 for c in cols.values()))
        for name, c in cols.items():
            assert c.seqs == list(range(7))
            assert all(r.status == "scored" for r in c.results)
            np.testing.assert_allclose([r.logit for r in c.results], np.arange(7) / 1000, rtol=1e-6)
            assert all(r.window.stream == name and r.latency_ms >= 0 for r in c.results)
        assert max(eng.batches) <= 4
        assert b.stats().scored == 21
        await b.aclose()

    asyncio.run(main())


async def backlog_behind_first(eng: FakeEngine, options: BatcherOptions, n: int) -> tuple[MicroBatcher, Collector]:
    """Window 0 holds the engine while windows 1..n queue behind it; returns once all n+1 are back."""
    eng.gate.clear()
    b = MicroBatcher(eng, options).start()
    c = Collector()
    st = b.open_stream("s", c)
    st.submit(win("s", 0))
    await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 5)
    for seq in range(1, n + 1):
        st.submit(win("s", seq))
    eng.gate.set()
    await until(lambda: len(c.results) == n + 1)
    return b, c


def test_windows_queued_during_a_batch_form_the_next_batch() -> None:
    async def main() -> None:
        eng = FakeEngine()
        b, c = await backlog_behind_first(eng, BatcherOptions(max_batch=64, max_wait_ms=0, max_pending=64), 10)
        assert eng.batches == [1, 10]
        assert c.seqs == list(range(11))
        await b.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("parallel", [1, 2])
def test_batches_are_sized_by_the_engines_preferred_batch_not_max_batch(parallel: int) -> None:
    """--max-batch 64 on an engine fastest at runs of 4: batches of 4 per engine call, never 64
    for the engine to cut up (and the batch buffer is 4 windows per call, not 64)."""
    async def main() -> None:
        eng = FakeEngine()
        eng.preferred_batch = 4
        options = BatcherOptions(max_batch=64, max_wait_ms=0, max_pending=64, parallel=parallel)
        b, c = await backlog_behind_first(eng, options, 20)
        assert eng.batches[0] == 1 and max(eng.batches) == 4 and sum(eng.batches) == 21
        assert len(eng.batches) == (6 if parallel == 1 else 7)  # 1, then 20 as 4s (parallel 2: 4+4, 4+4, 2+2)
        assert c.seqs == list(range(21))
        np.testing.assert_allclose([r.logit for r in c.results], np.arange(21) / 1000, rtol=1e-6)
        assert {a.shape for a in b._buffers._arrays} == {(4 * parallel, N)}
        await b.aclose()

    asyncio.run(main())

def test_overload_sheds_the_oldest_window_of_the_stream_and_keeps_order() -> None:
    async def main() -> None:
        eng = FakeEngine()
        eng.gate.clear()
        b = MicroBatcher(eng, BatcherOptions(max_batch=8, max_wait_ms=0, max_pending=3)).start()
        c = Collector()
        st = b.open_stream("s", c)
        st.submit(win("s", 0))
        await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 5)
        for seq in range(1, 8):  # 7 queued behind the held batch, room for 3
            st.submit(win("s", seq))
        assert b.stats().queued == 3
        eng.gate.set()
        await until(lambda: len(c.results) == 8)
        assert c.seqs == list(range(8))
        assert c.statuses() == ["scored"] + ["shed"] * 4 + ["scored"] * 3
        assert st.shed == 4 and b.stats().shed == 4
        assert all(r.window.samples.size == 0 for r in c.results if r.status == "shed")
        await b.aclose()

    asyncio.run(main())


def test_full_queue_sheds_from_the_stream_with_most_queued() -> None:
    async def main() -> None:
        eng = FakeEngine()
        eng.gate.clear()
        b = MicroBatcher(eng, BatcherOptions(max_batch=16, max_wait_ms=0, max_queue=4, max_pending=4)).start()
        heavy, light = Collector(), Collector()
        sh = b.open_stream("heavy", heavy)
        sl = b.open_stream("light", light)
        sh.submit(win("heavy", 0))
        await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 5)
        for seq in range(1, 4):
            sh.submit(win("heavy", seq))
        sl.submit(win("light", 0))  # fills the queue (3 heavy + 1)
        sl.submit(win("light", 1))  # over: heavy, with most queued, pays
        eng.gate.set()
        await until(lambda: len(heavy.results) == 4 and len(light.results) == 2)
        assert light.statuses() == ["scored", "scored"]
        assert heavy.statuses() == ["scored", "shed", "scored", "scored"]
        await b.aclose()

    asyncio.run(main())


def test_full_queue_never_sheds_a_block_stream() -> None:
    async def main() -> None:
        eng = FakeEngine()
        eng.gate.clear()
        b = MicroBatcher(eng, BatcherOptions(max_batch=16, max_wait_ms=0, max_queue=4, max_pending=4)).start()
        files, live = Collector(), Collector()
        sf = b.open_stream("file", files, policy="block")
        sl = b.open_stream("live", live)
        sf.submit(win("file", 0))
        await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 5)
        for seq in range(1, 4):
            sf.submit(win("file", seq))
        sl.submit(win("live", 0))  # fills the queue (3 file + 1)
        sf.submit(win("file", 4))  # over: the file has most queued, but only the live stream may pay
        sl.submit(win("live", 1))  # over again, only the file's windows queued: none is shed
        eng.gate.set()
        await until(lambda: len(files.results) == 5 and len(live.results) == 2)
        assert files.statuses() == ["scored"] * 5
        assert live.statuses() == ["shed", "scored"]
        await b.aclose()

    asyncio.run(main())


def test_engine_error_fails_that_batch_only() -> None:
    async def main() -> None:
        eng = FakeEngine()
        eng.gate.clear()
        b = MicroBatcher(eng, BatcherOptions(max_batch=8, max_wait_ms=0)).start()
        a, z = Collector(), Collector()
        sa, sz = b.open_stream("a", a), b.open_stream("z", z)
        eng.fail_next = True
        sa.submit(win("a", 0))
        sz.submit(win("z", 0))
        await asyncio.get_running_loop().run_in_executor(None, eng.entered.wait, 5)
        eng.gate.set()
        await until(lambda: len(a.results) + len(z.results) == 2)
        failed = a.results + z.results
        assert {r.status for r in failed} == {"error"}
        assert "simulated engine failure" in failed[0].error
        sa.submit(win("a", 1))
        sz.submit(win("z", 1))
        await until(lambda: len(a.results) == 2 and len(z.results) == 2)
        assert a.results[1].status == z.results[1].status == "scored"
        assert b.stats().errors == len(failed)
        await b.aclose()

    asyncio.run(main())


def test_results_carry_the_logit_and_a_non_finite_one_is_an_engine_error() -> None:
    """The probability is the sigmoid of the logit the engine gave; a NaN or infinite logit
    would poison the stream's running aggregate, so its batch is reported as an error."""
    async def main() -> None:
        b = MicroBatcher(FakeEngine(), BatcherOptions(max_batch=8, max_wait_ms=0)).start()
        c = Collector()
        st = b.open_stream("s", c, policy="block")
        for seq, z in enumerate((2.0, -3.0)):
            st.submit(win("s", seq, z))
            await st.drain()
        for seq, z in enumerate((np.inf, np.nan), start=2):
            st.submit(win("s", seq, z))
            await st.drain()
        assert [r.logit for r in c.results[:2]] == [2.0, -3.0]
        assert [r.probability for r in c.results[:2]] == pytest.approx([1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(3.0))])
        assert [(r.status, r.logit, r.probability) for r in c.results[2:]] == [("error", None, None)] * 2
        assert all("NaN or infinite" in r.error for r in c.results[2:])
        await b.aclose()

    asyncio.run(main())


def test_unscored_windows_pass_through_in_order() -> None:
    async def main() -> None:
        eng = FakeEngine()
        b = MicroBatcher(eng, BatcherOptions(max_wait_ms=0)).start()
        c = Collector()
        st = b.open_stream("s", c)
        for seq in range(6):
            st.submit(win("s", seq), score=seq % 2 == 0)
        await st.drain()
        assert c.seqs == list(range(6))
        assert c.statuses() == ["scored", "skipped"] * 3
        assert sum(eng.batches) == 3
        await b.aclose()

    asyncio.run(main())


def test_block_policy_waits_for_room_instead_of_shedding() -> None:
    async def main() -> None:
        eng = FakeEngine()
        b = MicroBatcher(eng, BatcherOptions(max_batch=2, max_wait_ms=0, max_pending=2)).start()
        c = Collector()
        st = b.open_stream("file", c, policy="block")
        for seq in range(50):
            await st.wait_room()
            assert st.in_flight < 2
            st.submit(win("file", seq))
        await st.drain()
        assert c.seqs == list(range(50)) and set(c.statuses()) == {"scored"}
        assert st.shed == 0
        await b.aclose()

    asyncio.run(main())


def test_aclose_drains_then_refuses() -> None:
    async def main() -> None:
        eng = FakeEngine()
        b = MicroBatcher(eng, BatcherOptions(max_batch=4, max_wait_ms=50)).start()
        c = Collector()
        st = b.open_stream("s", c)
        for seq in range(6):
            st.submit(win("s", seq))
        await b.aclose()
        await until(lambda: len(c.results) == 6)
        assert c.seqs == list(range(6))
        with pytest.raises(BatcherClosedError):
            st.submit(win("s", 6))
        with pytest.raises(BatcherClosedError):
            b.open_stream("late", c)

    asyncio.run(main())


def test_wrong_window_length_is_refused_at_submit() -> None:
    async def main() -> None:
        b = MicroBatcher(FakeEngine()).start()
        st = b.open_stream("s", Collector())
        bad = Window("s", 0, 0.0, 4.0, np.zeros(N + 1, np.float32), time.monotonic())
        with pytest.raises(ValueError, match=r"\(65,\).*\(64,\)"):
            st.submit(bad)
        st.close()
        assert b.stats().streams == 0
        await b.aclose()

    asyncio.run(main())


def test_real_engine_batched_scores_match_single_window_scores(checkpoints) -> None:
    import engines

    from tests.conftest import speech

    eng = engines.load(checkpoints["specrnet"], engine="onnx", threads=1, max_batch=8)
    x = np.stack([speech(4.0, i) for i in range(3)])
    alone = eng.logits(x)

    async def main() -> list[WindowResult]:
        b = MicroBatcher(eng, BatcherOptions(max_batch=8, max_wait_ms=20)).start()
        c = Collector()
        st = b.open_stream("s", c)
        for i in range(3):
            st.submit(Window("s", i, 0.0, 4.0, x[i], time.monotonic()))
        await st.drain()
        await b.aclose()
        return c.results

    results = asyncio.run(main())
    np.testing.assert_allclose([r.logit for r in results], alone, rtol=1e-4, atol=1e-6)


def test_live_windows_too_old_for_their_turn_are_shed_files_are_not() -> None:
    async def main() -> None:
        b = MicroBatcher(FakeEngine(), BatcherOptions(max_wait_ms=0, max_delay_ms=500)).start()
        live, file = Collector(), Collector()
        sl = b.open_stream("live", live)
        sf = b.open_stream("file", file, policy="block")
        old = time.monotonic() - 2.0
        for st, name in ((sl, "live"), (sf, "file")):
            st.submit(Window(name, 0, 0.0, 4.0, np.zeros(N, np.float32), old))
            st.submit(win(name, 1))
        await sl.drain()
        await sf.drain()
        assert live.statuses() == ["shed", "scored"] and sl.shed == 1
        assert file.statuses() == ["scored", "scored"]
        await b.aclose()

    asyncio.run(main())


def test_parallel_split_keeps_order_and_scores() -> None:
    class Slow(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.threads: set[str] = set()

        def batch_logits(self, x: np.ndarray) -> np.ndarray:
            self.threads.add(threading.current_thread().name)
            time.sleep(0.01)
            return super().batch_logits(x)

    async def main() -> None:
        eng = Slow()
        b = MicroBatcher(eng, BatcherOptions(max_batch=8, max_wait_ms=20, parallel=2, max_pending=64)).start()
        c = Collector()
        st = b.open_stream("s", c)
        for seq in range(24):
            st.submit(win("s", seq))
        await st.drain()
        assert c.seqs == list(range(24))
        np.testing.assert_allclose([r.logit for r in c.results], np.arange(24) / 1000, rtol=1e-6)
        assert len(eng.threads) == 2 and max(eng.batches) <= 4
        await b.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("fails", [False, True])
def test_engine_is_warmed_up_for_parallel_calls_before_scoring(fails: bool, caplog: pytest.LogCaptureFixture) -> None:
    class Warm(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.warmed: list[int] = []

        def warm_up(self, concurrency: int) -> None:
            assert not self.batches, "warm-up must come before the first real batch"
            self.warmed.append(concurrency)
            if fails:
                raise RuntimeError("simulated warm-up failure")

    async def main() -> None:
        eng = Warm()
        b = MicroBatcher(eng, BatcherOptions(max_batch=8, max_wait_ms=5, parallel=2, max_pending=64)).start()
        c = Collector()
        st = b.open_stream("s", c)
        for seq in range(3):
            st.submit(win("s", seq))
        await st.drain()
        assert eng.warmed == [2]
        assert c.statuses() == ["scored"] * 3  # a failed warm-up does not stop scoring
        await b.aclose()

    with caplog.at_level("WARNING", logger="realtime.batcher"):
        asyncio.run(main())
    assert ("engine warm-up failed (RuntimeError: simulated warm-up failure)" in caplog.text) == fails
