"""Audio files: found in folders, streamed as a source (paced like a microphone, or as fast as
they decode for ``--offline``), or read whole.

Decoding is libsndfile's (via soundfile): WAV, FLAC, OGG Vorbis/Opus, MP3 (libsndfile
>= 1.1), AIFF, CAF, W64 and the rest of its formats. Every failure to open or decode
becomes an :class:`~realtime.errors.AudioInputError` naming the file and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import AudioInputError, NonFiniteAudioError
from ..resample import MAX_CHANNELS, MAX_RATE, MIN_RATE

log = logging.getLogger(__name__)

__all__ = ["FileSource", "read_audio", "accepted_formats", "expand_inputs", "AUDIO_EXTENSIONS"]

#: What a folder given as input is searched for (a file named explicitly is tried whatever its name).
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus", ".oga", ".aif", ".aiff", ".caf", ".w64", ".au"})


def accepted_formats() -> str:
    """The human list of formats in error messages, from what this libsndfile can decode."""
    have = sf.available_formats()
    names = [n for n in ("WAV", "FLAC", "OGG", "MP3", "AIFF", "CAF", "W64") if n in have]
    names = ["OGG/Vorbis/Opus" if n == "OGG" else n for n in names]
    return f"{', '.join(names)}... via libsndfile {sf.__libsndfile_version__}"


_FD2 = threading.Lock()  # one capture of fd 2 at a time


@contextlib.contextmanager
def _decoder_chatter_to_log() -> Iterator[None]:
    """Keep what C decoders write straight to fd 2 off the user's stderr, logged at DEBUG.

    libmpg123 (libsndfile's MP3 decoder) prints "Warning: Xing stream size off..." and
    "Note: Illegal Audio-MPEG-Header..." for files that decode fine, dozens per file. Python's
    own writes to stderr meanwhile (a log line from another thread) are caught too: they are
    passed on to the real stderr unless they look like that chatter.
    """
    with _FD2, tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode("utf-8", "replace").splitlines():
                if _CHATTER.match(line):
                    log.debug("decoder: %s", line)
                else:
                    print(line, file=sys.stderr)


_CHATTER = re.compile(r"(Warning|Note|Error|\[[^]]*mpg123[^]]*\])[: ]", re.IGNORECASE)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their audio files (sorted, by extension).

    A file named explicitly is kept whatever its extension, so its error (if any) is reported."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            out.append(p)
    return out


def _open(path: Path) -> sf.SoundFile:
    """Open ``path`` for reading, turning every failure into a one-line AudioInputError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioInputError(path, "no such file") from None
    except OSError as e:
        raise AudioInputError(path, f"cannot be read: {e.strerror or e}") from None
    if path.is_dir():
        raise AudioInputError(path, "is a directory, not an audio file")
    if st.st_size == 0:
        raise AudioInputError(path, "empty file (0 bytes)")
    try:
        with _decoder_chatter_to_log():
            f = sf.SoundFile(path)
    except sf.LibsndfileError as e:
        detail = f"; libsndfile: {e.error_string}" if getattr(e, "error_string", "") else ""
        raise AudioInputError(
            path, f"not a readable audio file (accepted: {accepted_formats()}){detail}"
        ) from None
    except OSError as e:  # permission denied and the like
        raise AudioInputError(path, f"cannot be read: {e.strerror or e}") from None
    try:
        if f.frames == 0:
            raise AudioInputError(path, "contains no audio (0 frames)")
        if not MIN_RATE <= f.samplerate <= MAX_RATE:
            raise AudioInputError(
                path, f"sample rate {f.samplerate} Hz not supported (accepted: {MIN_RATE}..{MAX_RATE} Hz)"
            )
        if not 1 <= f.channels <= MAX_CHANNELS:
            raise AudioInputError(path, f"{f.channels} channels not supported (accepted: 1..{MAX_CHANNELS})")
    except AudioInputError:
        f.close()
        raise
    return f


def _read(f: sf.SoundFile, path: Path, frames: int, done: int) -> np.ndarray:
    try:
        if f.format != "MP3":  # the only chatty decoder: the others need no fd juggling
            return f.read(frames, dtype="float32", always_2d=True)
        with _decoder_chatter_to_log():
            return f.read(frames, dtype="float32", always_2d=True)
    except sf.LibsndfileError as e:
        raise AudioInputError(
            path, f"decoding failed after {done} frames (truncated or corrupt file?): {e.error_string}"
        ) from None


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a whole file as float32 ``(frames, channels)`` and its sample rate.

    Raises:
        AudioInputError: missing, empty, unreadable or undecodable file, no frames,
            unsupported rate or channel count.
        NonFiniteAudioError: a NaN/Inf sample (possible in float WAV files).
    """
    path = Path(path)
    with _open(path) as f:
        data = _read(f, path, -1, 0)
        rate = f.samplerate
    if data.shape[0] == 0:
        raise AudioInputError(path, "contains no audio (0 frames decoded)")
    with np.errstate(over="ignore", invalid="ignore"):
        finite = math.isfinite(np.add.reduce(data, axis=None))
    if not finite:
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        if bad.size:
            raise NonFiniteAudioError(str(path), int(bad[0]), rate)
    return data, rate


class FileSource:
    """An audio file delivered in chunks of ``chunk_s`` seconds.

    With ``realtime=True`` each chunk is delivered when its last frame would have been
    captured by a microphone (``start + frames_sent / (rate * speed)`` on a monotonic
    clock, so sleeping never accumulates drift); a 10-s file takes 10 s at
    ``speed=1``. With ``realtime=False`` chunks come as fast as they decode, yielding to
    the event loop between chunks.

    The file is opened (and checked) at construction, so a bad path fails before any
    streaming starts. Each ``async for`` reads the file from the beginning. Yielded
    arrays are new, float32 ``(n, channels)``. Sample values are not checked here (the
    windower rejects NaN/Inf); use :func:`read_audio` for a checked offline read.
    """

    def __init__(self, path: str | Path, realtime: bool = True, chunk_s: float = 0.1,
                 speed: float = 1.0, stream_id: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        for name, v in (("chunk_s", chunk_s), ("speed", speed)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {v!r}")
        self.path = Path(path)
        self.realtime = bool(realtime)
        self.chunk_s = float(chunk_s)
        self.speed = float(speed)
        self._clock = clock
        with _open(self.path) as f:
            self.sample_rate: int = f.samplerate
            self.channels: int = f.channels
            self.frames: int = f.frames
            self.format: str = f.format
        self._stream_id = stream_id if stream_id is not None else self.path.name
        self.chunk_frames = max(1, round(self.chunk_s * self.sample_rate))

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate

    def __aiter__(self) -> AsyncIterator[tuple[np.ndarray, int]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[tuple[np.ndarray, int]]:
        rate = self.sample_rate
        f = _open(self.path)
        try:
            sent = 0
            start = self._clock()
            while True:
                data = _read(f, self.path, self.chunk_frames, sent)
                if data.shape[0] == 0:
                    return
                sent += data.shape[0]
                delay = start + sent / (rate * self.speed) - self._clock() if self.realtime else 0.0
                # sleep(0) still yields, so a fast read never starves the loop.
                await asyncio.sleep(max(0.0, delay))
                yield data, rate
        finally:
            f.close()

    def __repr__(self) -> str:
        return (f"FileSource({str(self.path)!r}, realtime={self.realtime}, chunk_s={self.chunk_s}, "
                f"speed={self.speed}, stream_id={self.stream_id!r})")
