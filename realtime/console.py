"""Human-readable console view: one line per window, one summary line per stream/file.

    [  8.5– 12.5 s] ██████████░░ 0.93 SPOOF    ALERT   6.1 ms

Colour only when writing to a terminal, never when ``NO_COLOR`` is set (no-color.org);
``FORCE_COLOR`` forces it (CI logs). Block characters fall back to ASCII when the
output encoding cannot represent them.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TextIO

from .events import ErrorEvent, ScoreEvent, SummaryEvent

__all__ = ["use_color", "format_score", "format_summary", "format_error", "printable", "ConsoleView", "BAR_WIDTH"]

BAR_WIDTH = 12

_RESET = "\x1b[0m"
_STYLE = {
    "spoof": "\x1b[31m",  # red
    "bonafide": "\x1b[32m",  # green
    "no_speech": "\x1b[2m",  # dim
    "alert": "\x1b[1;97;41m",  # bold white on red
    "error": "\x1b[1;31m",
}
_NAMES = {"spoof": "SPOOF", "bonafide": "BONAFIDE", "no_speech": "NO SPEECH"}
_UNICODE = {"full": "█", "empty": "░", "none": "·", "dash": "–"}
_ASCII = {"full": "#", "empty": "-", "none": ".", "dash": "-"}


# Characters a terminal acts on rather than shows: C0/C1 controls (ESC starts a sequence that can
# clear the screen or move the cursor; a newline forges a line), DEL, line/paragraph separators,
# bidirectional overrides (text that reads differently than it is), lone surrogates
# (undecodable bytes of a file name, which would not even encode).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on escaped (``\x1b``, ``\n``,
    ``\u202e``); file names and stream ids come from whoever named the file or the stream."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


def use_color(stream: TextIO | None = None) -> bool:
    """Whether to colour output written to ``stream`` (default ``sys.stdout``)."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _can_encode(stream: TextIO | None) -> bool:
    enc = getattr(stream, "encoding", None) or "utf-8"
    try:
        "".join(_UNICODE.values()).encode(enc)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_STYLE[style]}{text}{_RESET}" if color else text


def format_score(ev: ScoreEvent, *, color: bool = False, show_stream: bool = False,
                 unicode: bool = True) -> str:
    """One aligned line for a score event (no trailing newline)."""
    g = _UNICODE if unicode else _ASCII
    head = f"[{ev.start_s:5.1f}{g['dash']}{ev.end_s:5.1f} s]"
    if show_stream:
        head = f"{printable(ev.stream)} {head}"
    p = ev.spoof_probability
    if p is None:
        bar, prob = g["none"] * BAR_WIDTH, "  - "
    else:
        filled = min(BAR_WIDTH, max(0, round(p * BAR_WIDTH)))
        bar, prob = g["full"] * filled + g["empty"] * (BAR_WIDTH - filled), f"{p:.2f}"
    label = f"{_NAMES[ev.label]:<9}"
    alert = _paint("ALERT", "alert", color) if ev.alert else "     "
    line = (f"{head} {_paint(bar, ev.label, color)} {prob} {_paint(label, ev.label, color)} "
            f"{alert} {ev.latency_ms:5.1f} ms")
    if ev.tiled:
        line += " (short clip, tiled)"
    if ev.shed:
        line += f" ({ev.shed} windows shed)"
    return line


def format_summary(ev: SummaryEvent, *, color: bool = False) -> str:
    """Per-stream/per-file verdict line, e.g. ``call.wav: SPOOF 0.88 (118 windows, 59.0 s)``."""
    name = _paint(_NAMES[ev.label], ev.label, color)
    verdict = name if ev.spoof_probability is None else f"{name} {ev.spoof_probability:.2f}"
    details = [f"{ev.windows} window" + ("" if ev.windows == 1 else "s")]
    if ev.duration_s is not None:
        details.append(f"{ev.duration_s:.1f} s")
    if ev.shed:
        details.append(f"{ev.shed} shed")
    if ev.model:
        details.append(ev.model)
    return f"{printable(ev.stream)}: {verdict} ({', '.join(details)})"


def format_error(ev: ErrorEvent, *, color: bool = False) -> str:
    where = f" {printable(ev.stream)}" if ev.stream else ""
    return f"{_paint('error', 'error', color)} [{ev.code}]{where}: {printable(ev.message)}"


class ConsoleView:
    """Writes formatted events to a text stream (default: ``sys.stdout`` at call time).

    ``color=None`` decides per :func:`use_color`; ``show_stream`` prefixes score lines
    with the stream id (for more than one stream).
    """

    def __init__(self, file: TextIO | None = None, color: bool | None = None,
                 show_stream: bool = False) -> None:
        self._file = file
        self._color = color
        self.show_stream = show_stream

    @property
    def file(self) -> TextIO:
        return sys.stdout if self._file is None else self._file

    def _write(self, line: str) -> None:
        f = self.file
        f.write(line + "\n")
        f.flush()

    @property
    def color(self) -> bool:
        return use_color(self.file) if self._color is None else self._color

    def score(self, ev: ScoreEvent) -> None:
        self._write(format_score(ev, color=self.color, show_stream=self.show_stream,
                                 unicode=_can_encode(self.file)))

    def summary(self, ev: SummaryEvent) -> None:
        self._write(format_summary(ev, color=self.color))

    def error(self, ev: ErrorEvent) -> None:
        self._write(format_error(ev, color=self.color))

    def show(self, ev: ScoreEvent | SummaryEvent | ErrorEvent) -> None:
        """Dispatch on the event type (ready events are not shown)."""
        if isinstance(ev, ScoreEvent):
            self.score(ev)
        elif isinstance(ev, SummaryEvent):
            self.summary(ev)
        elif isinstance(ev, ErrorEvent):
            self.error(ev)
