"""realtime.event_loop: the detector's loop is uvloop's where uvloop imports, asyncio's otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from realtime import event_loop


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_runs_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop is not installed (it does not build on Windows)")
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` raise ImportError
    assert event_loop.loop_factory() is None
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_cancellation_and_errors_reach_the_caller_as_with_asyncio_run() -> None:
    async def fails() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        event_loop.run(fails())

    async def cancelled() -> None:
        asyncio.current_task().cancel()  # type: ignore[union-attr]
        await asyncio.sleep(1)

    with pytest.raises(asyncio.CancelledError):
        event_loop.run(cancelled())


def test_signal_handlers_are_skipped_off_the_main_thread_on_either_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # The dashboard runs detection in a worker thread: asyncio refuses its signal handlers with
    # RuntimeError, uvloop with ValueError; neither may end the run.
    import signal
    import threading

    async def install() -> list[signal.Signals]:
        return event_loop.add_signal_handlers((signal.SIGINT, signal.SIGTERM), lambda: None)

    results: list[object] = []

    def worker() -> None:
        try:
            results.append(event_loop.run(install()))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            results.append(e)

    for uvloop_present in (True, False):
        if not uvloop_present:
            monkeypatch.setitem(sys.modules, "uvloop", None)
        t = threading.Thread(target=worker)
        t.start()
        t.join(10)
        assert results.pop() == []
    assert event_loop.run(install()) == [signal.SIGINT, signal.SIGTERM]  # the main thread: both
