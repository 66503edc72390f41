"""Wires the GUI thread (window, QTimer) to the detection thread through the bridge."""
from __future__ import annotations

import signal
import sys
from types import FrameType

from PySide6 import QtCore, QtWidgets

from realtime.dashboard import DashboardOptions
from realtime.dashboard.bridge import Bridge, SpectrogramWorker
from realtime.dashboard.gui_gc import GuiThreadCollection
from realtime.dashboard.runner import Detect, DetectionThread
from realtime.dashboard.window import DashboardWindow

__all__ = ["DashboardSession", "run_dashboard", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130


class DashboardSession:
    """One window, one detection thread, one spectrogram thread; ``stop`` ends both threads.

    Create it on the GUI thread (a QApplication must exist)."""

    def __init__(self, detect: Detect, options: DashboardOptions | None = None, max_events: int = 4096) -> None:
        # Before any Qt object of the session exists: no worker thread may collect one (gui_gc).
        self.collection = GuiThreadCollection()
        self.bridge = Bridge(max_events)
        self.spectrograms = SpectrogramWorker()
        self.thread = DetectionThread(detect, self.bridge)
        try:
            self.window = DashboardWindow(self.bridge, self.spectrograms, options)
        except BaseException:
            self.spectrograms.close()
            self.collection.close()
            raise
        self.window.closed.connect(self.stop)
        self.interrupted = False
        self._stopped = False

    def start(self) -> None:
        self.thread.start()
        self.window.start()
        self.window.show()

    def stop(self) -> None:
        """Cancel detection and join its thread (the window is closing or closed)."""
        if self._stopped:
            return
        self._stopped = True
        if not self.thread.stop():
            print("realtime-detect: detection did not stop within 30 s; leaving it behind", file=sys.stderr)
        self.spectrograms.close()
        self.collection.close()

    @property
    def exit_code(self) -> int:
        """The run's exit code; 0 when the user closed the window before it ended; 130 on Ctrl+C."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.thread.cancelled or self.thread.exit_code is None:
            return 0
        return self.thread.exit_code


def run_dashboard(detect: Detect, options: DashboardOptions | None = None) -> int:
    """Open the dashboard, run ``detect`` in a worker thread, return when the window is closed.

    Errors raised by the detection (a model that cannot load, ...) are shown in the window and
    re-raised here once it is closed, so the CLI reports them as usual."""
    # Kept referenced for the whole run: Qt needs the application object alive while windows exist.
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([sys.argv[0] if sys.argv else "realtime-detect"])
    session = DashboardSession(detect, options)
    loop = QtCore.QEventLoop()
    session.window.closed.connect(loop.quit)

    # Qt's C++ loop would keep Python from handling Ctrl+C: close the window from the handler,
    # and let the interpreter run every 200 ms so the handler gets its chance.
    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        session.interrupted = True
        session.window.close()

    previous = signal.signal(signal.SIGINT, on_sigint)
    wake = QtCore.QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    try:
        session.start()
        loop.exec()
    finally:
        wake.stop()
        signal.signal(signal.SIGINT, previous)
        session.stop()
        session.window.deleteLater()
        app.processEvents()  # runs the deferred delete while the application object is certainly alive
    if session.thread.error is not None:
        raise session.thread.error
    return session.exit_code
