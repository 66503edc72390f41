"""PortAudio calls that may never return, run where they cannot hang the event loop or the exit.

A sound server that dies can deadlock libpulse under PortAudio (PulseAudio 16.1 through the ALSA
pulse plugin): an open or a close then never returns. :class:`~realtime.sources.mic.MicSource`
makes those calls through :func:`in_daemon_thread`, and :data:`portaudio_threads` says whether any
is still inside PortAudio, which must then not be re-initialised.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["in_daemon_thread", "portaudio_threads"]


# Helper threads still inside a PortAudio call, awaited or not (a close stuck in libpulse stays
# here for good, keeping its stream alive). PortAudio must not be terminated while one runs:
# terminating closes every stream, racing that call, or blocking for good behind a stuck one.
portaudio_threads: set[threading.Thread] = set()


async def in_daemon_thread(fn: Callable[[], Any], timeout: float, *, finish_on_cancel: bool = False) -> Any:
    """``fn()`` in a new daemon thread; its result, its exception, or TimeoutError after ``timeout`` s.

    Not asyncio.to_thread: executor threads are joined at interpreter exit, so one stuck
    in PortAudio would hang the exit; a daemon thread is left behind.
    With ``finish_on_cancel``, a cancellation first waits for ``fn`` (until the same deadline):
    asyncio.run cancels every task as it ends, a generator's aclose() among them.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any] = loop.create_future()

    def deliver(ok: bool, value: Any) -> None:
        if not fut.done():
            fut.set_result(value) if ok else fut.set_exception(value)

    def run() -> None:
        try:
            result = fn()
        except Exception as e:  # handed over to the awaiting coroutine, which re-raises it
            ok, value = False, e
        else:
            ok, value = True, result
        finally:
            portaudio_threads.discard(thread)  # before the result: whoever it wakes sees the call over
        try:
            loop.call_soon_threadsafe(deliver, ok, value)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    thread = threading.Thread(target=run, name="realtime-mic", daemon=True)
    portaudio_threads.add(thread)
    thread.start()
    deadline = loop.time() + timeout
    try:
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(fut)
    except (TimeoutError, asyncio.CancelledError) as e:
        if finish_on_cancel and isinstance(e, asyncio.CancelledError):
            await asyncio.wait([fut], timeout=max(0.0, deadline - loop.time()))
        # A late exception is nobody's business any more; retrieve it so asyncio does not log it.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        raise
