"""Live dashboard (``realtime-detect ... --dashboard``): pyqtgraph on PySide6, in the ``dashboard`` extra.

Importing this package imports no Qt: :func:`check_available` says what is missing, and
:func:`run_dashboard` imports the GUI only when called. ``bridge`` and ``runner`` are
Qt-free (they run on the detection side); ``window`` and ``app`` are GUI-thread code.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engines.errors import MissingExtraError
from realtime.errors import RealtimeError

if TYPE_CHECKING:
    from realtime.dashboard.runner import Detect

__all__ = ["check_available", "run_dashboard", "DashboardOptions", "DashboardUnavailableError", "DashboardError",
           "INSTALL_HINT"]

INSTALL_HINT = "pip install 'realtime-detect[dashboard]' -c constraints.txt"
#: Debian packages the Qt wheels load at run time.
QT_SYSTEM_PACKAGES = "libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3"
_REQUIRED = (("pyqtgraph", "pyqtgraph"), ("PySide6", "PySide6-Essentials"))  # (module, distribution)


@dataclass
class DashboardOptions:
    title: str = "realtime-detect"
    history_s: float = 180.0  # seconds of audio on the scrolling plot
    max_streams: int = 64  # streams listed; past it the oldest finished one is forgotten (a server runs for days)
    refresh_ms: int = 100  # GUI drain/redraw period
    exit_when_done: bool = False  # close once detection has ended and the final state is drawn


class DashboardUnavailableError(MissingExtraError):
    """The dashboard's Python packages are not installed; the message names the missing ones."""

    def __init__(self, missing: list[str]) -> None:
        ImportError.__init__(self, f"the dashboard needs pyqtgraph and PySide6-Essentials "
                                   f"(missing: {', '.join(missing)}): {INSTALL_HINT}")
        self.missing = missing


class DashboardError(RealtimeError):
    """Qt is installed but cannot open a window here (no display, missing system library)."""


def check_available() -> None:
    """Raise :class:`DashboardUnavailableError` or :class:`DashboardError` unless a window can open."""
    missing = [dist for mod, dist in _REQUIRED if importlib.util.find_spec(mod) is None]
    if missing:
        raise DashboardUnavailableError(missing)
    try:
        import PySide6.QtWidgets  # noqa: F401 - loads libEGL, libxkbcommon, ... now, not mid-run
    except ImportError as e:
        raise DashboardError(f"the dashboard cannot load Qt ({e}); on Debian: apt-get install "
                             f"{QT_SYSTEM_PACKAGES}") from None
    # Without a display Qt aborts the whole process; say so instead.
    if sys.platform.startswith("linux") and not any(
            os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        raise DashboardError("the dashboard needs a display: DISPLAY and WAYLAND_DISPLAY are unset "
                             "(for a headless run set QT_QPA_PLATFORM=offscreen)")


def run_dashboard(detect: Detect, options: DashboardOptions | None = None) -> int:
    """Open the window and run ``detect`` in a worker thread; see :func:`realtime.dashboard.app.run_dashboard`."""
    check_available()
    from realtime.dashboard.app import run_dashboard as run

    return run(detect, options)
