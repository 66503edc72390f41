"""Python's cyclic garbage collection on the GUI thread only, while a dashboard is open.

The collector runs in whichever thread happens to allocate past its threshold. When that is a
worker (detection, spectrogram, a server's clients) and the garbage holds Qt objects, their C++
destructors run there with the GIL held and take Qt's locks, while the GUI thread may hold one of
those locks and wait for the GIL: a deadlock. Seen once as a hung dashboard test (py-spy: the GUI
thread idle inside a PySide signal connect, two client threads idle in an import). So while any
window is open automatic collection is off, and a timer on the GUI thread collects instead, by the
same per-generation thresholds the automatic collector uses.
"""
from __future__ import annotations

import gc

from PySide6 import QtCore

__all__ = ["GuiThreadCollection"]

_INTERVAL_MS = 500


def _collect_due_generation() -> None:
    counts, thresholds = gc.get_count(), gc.get_threshold()
    for generation in (2, 1, 0):  # the oldest due generation, which includes the younger ones
        if thresholds[generation] and counts[generation] > thresholds[generation]:
            gc.collect(generation)
            return


class GuiThreadCollection:
    """Create and ``close`` on the GUI thread. Nested sessions share the state: automatic
    collection comes back (if it was on) when the last one closes."""

    _open = 0
    _was_enabled = True

    def __init__(self) -> None:
        if GuiThreadCollection._open == 0:
            GuiThreadCollection._was_enabled = gc.isenabled()
            gc.disable()
        GuiThreadCollection._open += 1
        self._timer = QtCore.QTimer()
        self._timer.timeout.connect(_collect_due_generation)
        self._timer.start(_INTERVAL_MS)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        GuiThreadCollection._open -= 1
        if GuiThreadCollection._open == 0 and GuiThreadCollection._was_enabled:
            gc.enable()
