"""Event log in a JSON lines file: ``--events FILE.jsonl`` (see :mod:`realtime.eventlog`).

One ``write`` of all the batch's lines, then ``flush``. A flushed batch is in the kernel: it
survives the process being killed (SIGKILL, OOM). ``fsync`` (which survives an OS crash or
power loss) runs at most ``fsync_interval_s`` after a batch was written (default 1 s; 0:
after every batch), and at close. A crash in the middle of a ``write`` can leave a torn last
line; it was never committed, and opening the file again cuts it off (with a warning) so that
every line of the file parses and appending goes on cleanly.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from .eventlog_base import EventLog, EventLogError, EventLogOptions, log
from .events import Event

__all__ = ["JsonlEventLog"]


def _repair_tail(f, path: Path) -> None:
    """Cut off a torn last line (no trailing newline): the remains of a write cut short."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    pos, keep = size, 0
    while pos > 0:  # search backwards for the last newline
        step = min(65536, pos)
        pos -= step
        f.seek(pos)
        block = f.read(step)
        i = block.rfind(b"\n")
        if i >= 0:
            keep = pos + i + 1
            break
    f.truncate(keep)
    log.warning("event log %s: cut off a torn last line of %d bytes (an uncommitted write from a crash)",
                path, size - keep)


class JsonlEventLog(EventLog):
    """One event per line, appended (see the module doc for what is durable when)."""

    def __init__(self, path: str | Path, options: EventLogOptions | None = None) -> None:
        self.path = Path(path)
        try:
            # Unbuffered binary: a write that fails (disk full) leaves nothing behind in a buffer
            # to fail again at close, and what it wrote in part is cut off again (_write).
            self._file = open(self.path, "a+b", buffering=0)  # noqa: SIM115 (closed by the writer thread)
            _repair_tail(self._file, self.path)
            self._file.seek(0, os.SEEK_END)
        except OSError as e:
            raise EventLogError(f"--events {path}: cannot open for appending ({e.strerror or e})") from None
        super().__init__(str(self.path), options)

    def _write(self, batch: list[Event]) -> None:
        data = memoryview("".join(ev.to_json() + "\n" for ev in batch).encode())
        start = self._file.seek(0, os.SEEK_END)
        try:
            while data:
                data = data[self._file.write(data):]
        except OSError:
            # A batch is committed whole or not at all: no torn line between good ones.
            with contextlib.suppress(OSError):
                self._file.truncate(start)
            raise

    def _sync(self) -> None:
        os.fsync(self._file.fileno())

    def _close(self) -> None:
        self._file.close()
