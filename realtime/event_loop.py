"""The event loop the detector runs on: uvloop where it is installed, asyncio's own elsewhere.

uvloop runs sockets, transports and callback scheduling in C, so the server's per-frame work
(WebSocket frames, PCM, ring, submit) leaves more of the GIL to scoring. Measured with
``tools/loadtest.py`` on the 2-core VM, the two loops alternated twice in one run: 150 streams
121-123 -> 150 of 150 sustained, 200 streams 103-104 -> 122-125 (docs/benchmarks.md).
uvloop does not build on Windows, where asyncio's loop is used.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest loop available (same cancellation and Ctrl-C handling)."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def add_signal_handlers(signals: tuple[signal.Signals, ...], callback: Callable[[], object]) -> list[signal.Signals]:
    """Install ``callback`` for ``signals`` on the running loop where this thread may handle them;
    returns those installed. Off the main thread (the dashboard's worker) or off POSIX there are
    none: asyncio refuses with RuntimeError or NotImplementedError, uvloop with ValueError."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in signals:
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    return installed
