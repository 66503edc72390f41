"""Where a CLI run's events go: JSON lines or the console view on stdout, errors on stderr, the
records (event log, webhook); and what happens when stdout's reader leaves."""
from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from realtime.options import OutputOptions

if TYPE_CHECKING:
    from realtime.observers import RunObserver


class Output:
    """Routes events to JSON lines (stdout) and/or the console view; errors always reach stderr."""

    def __init__(self, options: OutputOptions, stdout: TextIO, stderr: TextIO, show_stream: bool,
                 records: Sequence = ()) -> None:  # records: the event log, the webhook
        from realtime.console import ConsoleView

        self.json, self.quiet, self.stdout, self.stderr = options.json, options.quiet, stdout, stderr
        self.view = ConsoleView(stdout, color=options.color, show_stream=show_stream)
        self.records = records
        self.windows = options.windows  # score events too (--offline without --windows: summaries and errors only)
        self.stdout_closed = asyncio.Event()  # its reader left (`| head`): the run stops quietly

    def __call__(self, ev) -> None:  # ScoreEvent | SummaryEvent | ErrorEvent
        from realtime.console import format_error

        if ev.type == "score" and not self.windows:
            return  # neither shown nor recorded: the event log keeps what --json prints
        for record in self.records:
            record(ev)
        if ev.type == "error":
            print(format_error(ev, color=False), file=self.stderr, flush=True)
        if self.stdout_closed.is_set():
            return
        try:
            if self.json:
                print(ev.to_json(), file=self.stdout, flush=True)
            elif not self.quiet and ev.type != "error":
                self.view.show(ev)
        except BrokenPipeError:
            silence(self.stdout)
            self.stdout_closed.set()

    def model_line(self, model: str, threshold: float) -> None:
        """Which model and threshold the verdicts use, above the console view."""
        if not self.json and not self.quiet:
            with contextlib.suppress(BrokenPipeError):
                print(f"model {model}: spoof at or above {threshold:.2f} (each model has its own threshold; "
                      "--threshold sets one)", file=self.stdout, flush=True)


def silence(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at /dev/null: its reader is gone, and whatever is still
    buffered must not fail again when Python flushes it at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def plot_observers(files: list[Path], options: OutputOptions, stderr: TextIO) -> list[RunObserver]:
    """--plot: a timeline image per file, from every window (--windows or not)."""
    if options.plot is None:
        return []
    from realtime.console import printable
    from realtime.plot import TimelinePlotter, plot_targets

    def written(path: Path) -> None:
        if not options.quiet:
            print(f"realtime-detect: timeline written to {printable(str(path))}", file=stderr, flush=True)

    targets = {str(f): t for f, t in zip(files, plot_targets(options.plot, files))}
    return [TimelinePlotter(targets, written)]


