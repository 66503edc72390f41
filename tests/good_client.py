"""The well-behaved client of the fuzz tests (tests/test_protocol_fuzz.py, tests/test_telephony_fuzz.py):
one session run again and again in a thread of its own while the tests attack the same server, so
that they can check that nothing a bad client does disturbs the others."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from websockets.exceptions import ConnectionClosed

JOIN_S = 20.0  # at the end, how long the session under way may take to finish


class GoodClient:
    """Runs ``session()`` over and over, from ``with`` until its end.

    ``session`` returns what went wrong (a description), or None when the session ended as it
    should. ``completed`` counts the sessions that ended, well or not; ``failures`` lists what
    went wrong, lost connections included.
    """

    def __init__(self, session: Callable[[], Awaitable[str | None]]) -> None:
        self._session = session
        self.completed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> GoodClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(JOIN_S)

    async def _main(self) -> None:
        while not self._stop.is_set():
            try:
                failure = await self._session()
            except (OSError, ConnectionClosed, TimeoutError) as e:
                failure = f"{type(e).__name__}: {e}"
            if failure is not None:
                self.failures.append(failure)
            self.completed += 1

    def wait_for_progress(self, since: int, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for a session to end after the first ``since``; assert
        that one did and that none failed."""
        deadline = time.monotonic() + timeout
        while self.completed <= since and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.failures == []
        assert self.completed > since, "the good client made no progress"
