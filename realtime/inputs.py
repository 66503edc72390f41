"""Input sources by name: ``--input NAME[:ARG]`` looks NAME up here; anything else is files.

An opener takes the words after ``--input`` (``["ARG"]`` for ``NAME:ARG``; every path for
files) and the run's options, and returns what to run: :class:`Inputs` (streams the CLI
scores one after another) or :class:`Listener` (a server that opens its own streams). It
raises ValueError for a usage error, RealtimeError for an input that cannot be used. A new
source is one module with an opener and one :func:`register` call (or a line in
:data:`SOURCES`).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from realtime.access import check_bind, is_loopback
from realtime.console import printable
from realtime.errors import RealtimeError
from realtime.options import DetectorOptions

if TYPE_CHECKING:
    from realtime.batcher import Policy
    from realtime.server import DetectorServer
    from realtime.sources import Source

DEMO_CLIP = Path(__file__).resolve().parent / "assets" / "demo.flac"


@dataclass(frozen=True)
class Inputs:
    """Streams run through one pipeline, in turn (:func:`realtime.run.run_inputs`)."""

    streams: Sequence[tuple[str, Callable[[], Source]]]  # (stream id, opener)
    policy: Policy  # "block": the input can wait for the engine (files, pipes); "shed": it cannot (a microphone)
    title: str  # the dashboard's
    files: bool = False  # a failing input is one bad_audio event and the next one runs; else the run ends there
    endless: bool = False  # no end of its own (a microphone): Ctrl+C is how it ends, exit 0 rather than 130
    report: Callable[[TextIO], None] | None = None  # after the run: what the input has to say (stderr)


@dataclass(frozen=True)
class Listener:
    """A server input: it accepts connections and opens a stream for each."""

    server_class: type[DetectorServer]
    title: str


Opener = Callable[[Sequence[str], DetectorOptions], "Inputs | Listener"]


def open_files(words: Sequence[str], options: DetectorOptions) -> Inputs:
    """Audio files and folders ('demo': the bundled clip), replayed in real time or, offline,
    read as fast as they decode: the only difference is the pacing."""
    from realtime.sources.file import FileSource, expand_inputs

    files = expand_inputs([DEMO_CLIP if x == "demo" else Path(x) for x in words])
    if not files:
        raise RealtimeError(f"no audio files found in {printable(' '.join(words))}")
    o = options.input
    streams = [(str(p), functools.partial(FileSource, p, realtime=not o.offline, chunk_s=o.chunk_s, speed=o.speed))
               for p in files]
    return Inputs(streams, "block", files[0].name + (f" (+{len(files) - 1})" if len(files) > 1 else ""), files=True)


def open_stdin(words: Sequence[str], options: DetectorOptions) -> Inputs:
    """Raw PCM on stdin (``--input -``): a pipe can wait (the producer blocks), so nothing is shed."""
    from realtime.sources import StdinSource

    o = options.input
    source = functools.partial(StdinSource, o.stdin_format, o.stdin_rate, o.stdin_channels, chunk_s=o.chunk_s)
    return Inputs([("stdin", source)], "block", "stdin")


def open_mic(words: Sequence[str], options: DetectorOptions) -> Inputs:
    """The microphone: one live stream until Ctrl+C (or the dashboard closes)."""
    from realtime.sources.mic import MicSource

    source = MicSource(options.input.device, retry=options.input.retry)  # opens lazily; errors name the device

    def report(stderr: TextIO) -> None:
        lost = source.overflows + source.device_overflows
        if lost:
            print(f"realtime-detect: microphone: {lost} overflow(s), {source.dropped_frames} frames dropped"
                  " (the machine could not keep up)", file=stderr)

    return Inputs([(source.stream_id, lambda: source)], "shed", "microphone", endless=True, report=report)


def open_ws(words: Sequence[str], options: DetectorOptions) -> Listener:
    """The WebSocket server (browser page, protocol v1, Twilio, AudioHook)."""
    from realtime.server import DetectorServer

    s = options.server
    check_bind(s)  # a ValueError: a usage error before anything listens
    return Listener(DetectorServer, f"ws://{s.host}:{s.port}")


def open_audiosocket(words: Sequence[str], options: DetectorOptions) -> Listener:
    """The Asterisk AudioSocket listener."""
    from realtime.telephony.audiosocket import AudioSocketServer

    s = options.server
    if not s.insecure and not is_loopback(s.host):
        raise ValueError(f"--host {s.host}: AudioSocket carries no credentials; keep it on a private network "
                         "and pass --insecure")
    return Listener(AudioSocketServer, f"tcp://{s.host}:{s.port}")


#: Named inputs; anything not named here is files (:func:`open_files`).
SOURCES: dict[str, Opener] = {"-": open_stdin, "mic": open_mic, "ws": open_ws, "audiosocket": open_audiosocket}


def register(name: str, opener: Opener) -> None:
    """Make ``--input NAME[:ARG]`` run ``opener``."""
    SOURCES[name] = opener


def named_inputs(words: Sequence[str]) -> list[str]:
    """The words of ``--input`` that name a registered source rather than files."""
    return [w for w in words if w.partition(":")[0] in SOURCES]


def resolve(words: Sequence[str], options: DetectorOptions) -> Inputs | Listener:
    """What ``--input WORDS`` runs; ValueError for a usage error."""
    named = named_inputs(words)
    if not named:
        return open_files(words, options)
    if len(words) > 1:
        raise ValueError(f"--input {' '.join(words)}: {', '.join(repr(w) for w in named)} cannot be combined "
                         "with other inputs")
    name, _, arg = words[0].partition(":")
    return SOURCES[name]([arg] if arg else [], options)
