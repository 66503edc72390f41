"""Detection in a worker thread with its own asyncio loop, stoppable from the GUI thread.

The GUI thread owns Qt; this thread owns the event loop, the sources and the engine (whose
inference runs in the scorer's own pool thread, off the loop). ``stop`` cancels the
detection task through ``call_soon_threadsafe`` (the only safe way to touch a loop from
another thread), so the detection code unwinds through its ``finally`` blocks (engine
closed, inference pool joined) and then the thread is joined.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from realtime.dashboard.bridge import Bridge

__all__ = ["DetectionThread", "Detect"]

#: Starts detection: given the bridge to feed, returns the coroutine to run (its result: an exit code).
Detect = Callable[[Bridge], Coroutine[Any, Any, int]]


class DetectionThread(threading.Thread):
    def __init__(self, detect: Detect, bridge: Bridge) -> None:
        super().__init__(name="detection", daemon=True)
        self._detect = detect
        self.bridge = bridge
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[int] | None = None
        self._stop_requested = False
        self.cancelled = False
        self.exit_code: int | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.exit_code = asyncio.run(self._main())
        except asyncio.CancelledError:
            self.cancelled = True
        except Exception as e:  # noqa: BLE001 - handed over: the main thread re-raises it after the GUI closes
            self.error = e
        finally:
            self.bridge.finish(self.exit_code, self.error)

    async def _main(self) -> int:
        with self._lock:
            if self._stop_requested:  # closed before the loop even started
                raise asyncio.CancelledError
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()  # type: ignore[assignment]
        return await self._detect(self.bridge)

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Cancel detection and join; True when the thread has ended. Safe to call repeatedly."""
        with self._lock:
            self._stop_requested = True
            loop, task = self._loop, self._task
        if loop is not None and task is not None and not task.done():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed in between: detection has already ended
                pass
        if self.is_alive():
            self.join(timeout)
        return not self.is_alive()
