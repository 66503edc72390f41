"""Microphone input through PortAudio (python-sounddevice), as a :class:`~realtime.sources.Source`,
and the ``--list-devices`` table of the inputs it can open.

Threading: PortAudio calls :meth:`MicSource._callback` on its own thread. The callback only
copies ``indata`` into a preallocated :class:`~realtime.sources.capture_ring.CaptureRing`
(single producer, single consumer: the callback alone advances the write count, the event
loop alone the read count, each published after its copy), counts overflows and, when the
event loop is waiting, wakes it with ``call_soon_threadsafe``. It never blocks or logs, and
raises only ``CallbackAbort``, to stop a stream this source no longer owns. When the ring is full the whole block is dropped and counted (``overflows``,
``dropped_frames``); overflows PortAudio itself reports (the OS lost audio before the
callback ran) are counted in ``overflows`` and ``device_overflows``.

A device that stops delivering (stream aborted by PortAudio, unplugged, sound server
gone, no callback for ``stall_s``) raises :class:`AudioDeviceError` naming the device,
or, with ``retry=True``, is reopened with exponential backoff (at most ``max_retries``
attempts per outage). Audio lost during an outage is not replaced: the stream just
continues, so stream time falls behind wall time by the length of the gap. The first
open is not retried: a wrong ``--device`` fails at once.

Opening and closing streams run in daemon threads with timeouts (realtime.sources.portaudio_calls), because a sound server
that dies can deadlock libpulse under PortAudio (seen with PulseAudio 16.1 through the ALSA
pulse plugin); a stream whose close never returns is abandoned (``stuck`` becomes True)
rather than hanging the event loop or the process exit. PortAudio is not re-initialised
while such a call is still running: its terminate would close that stream too.

Devices are listed and chosen by :mod:`realtime.sources.audio_devices`, which imports
sounddevice on first use (extra ``realtime-detect[mic]``; PortAudio: Debian ``libportaudio2``).
"""

from __future__ import annotations

import asyncio
import atexit
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import numpy as np

from ..resample import MAX_CHANNELS, MAX_RATE, MIN_RATE
from .audio_devices import (
    AudioDeviceError,
    DeviceSpec,
    import_sounddevice,
    input_devices,
    rescan_devices,
    resolve_device,
)
from .capture_ring import CaptureRing
from .portaudio_calls import in_daemon_thread, portaudio_threads

__all__ = ["MicSource", "list_devices"]


def list_devices() -> str:
    """A table of the input devices for ``--list-devices``: index, channels, default rate, name.

    The default input device is marked with ``*``.
    """
    sd = import_sounddevice()
    devices, default = input_devices(sd)
    apis = [a["name"] for a in sd.query_hostapis()]
    rows = [(i, d) for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]
    if not rows:
        return "no audio input devices found (is a microphone or sound server available?)"
    lines = ["  index  channels  default rate  name (host API)"]
    for i, d in rows:
        mark = "*" if i == default else " "
        api = apis[d["hostapi"]] if 0 <= d.get("hostapi", -1) < len(apis) else "?"
        lines.append(f"{mark} {i:5d}  {d['max_input_channels']:8d}  {d['default_samplerate']:9.0f} Hz"
                     f"  {d['name']} ({api})")
    lines.append("* default input device")
    return "\n".join(lines)


def _positive(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number of seconds, got {v!r}")
    return float(v)


class MicSource:
    """Live audio from an input device, in blocks of ``block_s`` seconds at the device's native rate.

    Args:
        device: None (default input), an index, or a case-insensitive name substring.
        stream_id: id copied into every event.
        block_s: PortAudio block length (the callback period and the smallest chunk).
        retry: reopen a lost device with backoff instead of raising.
        channels: channels to capture (1..the device's maximum); the windower downmixes.
        sample_rate: capture rate; None uses the device's default (native) rate.
        buffer_s: ring between the callback and the event loop; a consumer that falls
            further behind loses whole blocks (counted in ``overflows``/``dropped_frames``).
        stall_s: no callback for this long (after the first, which may take longer) means
            the device is lost.
        max_retries: reopen attempts per outage with ``retry=True``.

    The device is resolved and its rate queried at construction, so a bad ``--device``
    fails before anything starts. Capture starts when iteration starts and stops when
    it ends (``break``, cancellation or an error). Yielded arrays are new float32
    ``(n, channels)``; one iteration at a time.

    Raises (from construction or iteration):
        MicUnavailableError: sounddevice or PortAudio missing.
        AudioDeviceError: device unknown, ambiguous, unopenable, or lost (``retry=False``,
            or ``max_retries`` reopen attempts failed).
    """

    def __init__(self, device: DeviceSpec = None, stream_id: str = "mic", block_s: float = 0.05,
                 retry: bool = False, *, channels: int = 1, sample_rate: int | None = None,
                 buffer_s: float = 2.0, stall_s: float = 2.0, max_retries: int = 8,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.block_s = _positive("block_s", block_s)
        self.buffer_s = _positive("buffer_s", buffer_s)
        self.stall_s = _positive("stall_s", stall_s)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 1:
            raise ValueError(f"max_retries must be an int >= 1, got {max_retries!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be an int in 1..{MAX_CHANNELS}, got {channels!r}")
        self.device_spec = device
        self.retry = bool(retry)
        self.max_retries = max_retries
        self.channels = channels
        self._stream_id = stream_id
        self._clock = clock
        self._sd = import_sounddevice()
        devices, default = input_devices(self._sd)
        self.device_index = resolve_device(device, devices, default)
        info = devices[self.device_index]
        self.device_name: str = info["name"]
        if channels > info["max_input_channels"]:
            raise AudioDeviceError(self.device_label, f"has {info['max_input_channels']} input channels, "
                                   f"{channels} requested")
        rate = sample_rate if sample_rate is not None else round(info["default_samplerate"])
        if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
            raise AudioDeviceError(self.device_label, f"sample rate {rate!r} Hz not supported "
                                   f"(accepted: {MIN_RATE}..{MAX_RATE} Hz)")
        self.sample_rate: int = rate
        self.blocksize = max(1, round(self.block_s * rate))
        # At least four blocks, so a consumer a little late never drops audio.
        capacity = max(4 * self.blocksize, round(self.buffer_s * rate))
        self._ring = CaptureRing(capacity, channels)
        self._reset_counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._stream: Any = None
        self._gen = 0  # bumped at every open and close; a stream's callbacks check it
        self._running = False
        self.stuck = False  # a stream of this source could not be closed (see _close_stream)
        self.open_timeout_s = 10.0
        self.close_timeout_s = 3.0

    def _reset_counters(self) -> None:
        self._ring.clear()
        self._waiting = False  # the event loop sleeps until the callback wakes it
        self._lost = False  # PortAudio ended the stream (finished_callback)
        self._last_callback = 0.0
        self._callbacks = 0
        self.overflows = 0  # blocks dropped on a full ring + PortAudio overflow flags
        self.device_overflows = 0  # PortAudio's input_overflow flags alone
        self.dropped_frames = 0  # frames dropped on a full ring
        self.reconnects = 0

    @property
    def stream_id(self) -> str:
        return self._stream_id

    @property
    def device_label(self) -> str:
        return f"input device {self.device_index} {self.device_name!r}"

    @property
    def frames_captured(self) -> int:
        """Frames the callback stored (not counting dropped blocks)."""
        return self._ring.written

    # -- PortAudio thread ---------------------------------------------------------------

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.device_overflows += 1
            self.overflows += 1
        if not self._ring.put(indata):
            self.overflows += 1
            self.dropped_frames += frames
        self._last_callback = self._clock()
        self._callbacks += 1
        self._wake_loop()

    def _finished(self) -> None:
        self._lost = True
        self._wake_loop()

    def _wake_loop(self) -> None:
        if self._waiting and self._loop is not None and self._event is not None:
            self._waiting = False
            try:
                self._loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # loop already closed: nobody left to wake
                pass

    # -- stream lifecycle (PortAudio calls that may block run in daemon threads) ---------

    def _open_stream(self, gen: int, rescan: bool) -> Any:
        """Open and start a stream on the device; runs in a helper thread (opening can be slow)."""
        sd = self._sd
        if rescan:
            rescan_devices(sd)
        devices, default = input_devices(sd)
        index = resolve_device(self.device_spec, devices, default)

        # Callbacks of a stream this source no longer owns (closed, or whose open timed out)
        # stop that stream instead of writing into the ring: one producer at a time.
        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if self._gen != gen:
                raise sd.CallbackAbort
            self._callback(indata, frames, time_info, status)

        def finished() -> None:
            if self._gen == gen:
                self._finished()

        stream = sd.InputStream(device=index, channels=self.channels, samplerate=self.sample_rate,
                                blocksize=self.blocksize, dtype="float32",
                                callback=callback, finished_callback=finished)
        try:
            stream.start()
        except sd.PortAudioError:
            stream.close(ignore_errors=True)
            raise
        self.device_index, self.device_name = index, devices[index]["name"]
        return stream

    async def _start(self, rescan: bool) -> None:
        self._gen += 1
        self._lost = False
        self._last_callback = self._clock()
        self._callbacks = 0
        try:
            self._stream = await in_daemon_thread(partial(self._open_stream, self._gen, rescan),
                                                   self.open_timeout_s)
        except TimeoutError:
            self._gen += 1  # if the open completes later, that stream aborts itself on its first callback
            raise AudioDeviceError(self.device_label, f"opening did not finish within {self.open_timeout_s:g} s "
                                   "(audio system stuck?)") from None

    async def _close_stream(self) -> None:
        """Stop and close the stream, waiting at most ``close_timeout_s``, even when cancelled
        meanwhile (a close left running would race the next PortAudio call, a rescan's terminate).

        A sound server that dies can deadlock inside libpulse/ALSA, and PortAudio's abort
        then waits forever for its audio thread. Such a stream is abandoned: kept referenced
        by its helper thread (its C callbacks must stay valid), never touched again, and
        sounddevice's exit handler, which would try to close it and hang the process at exit,
        is unregistered.
        """
        self._gen += 1
        stream, self._stream = self._stream, None
        if stream is None:
            return
        closed = threading.Event()

        def close() -> None:
            try:
                stream.abort(ignore_errors=True)  # abort(): no waiting for queued buffers
                stream.close(ignore_errors=True)
            finally:
                closed.set()

        try:
            await in_daemon_thread(close, self.close_timeout_s, finish_on_cancel=True)
        except TimeoutError:
            pass
        finally:
            if not closed.is_set():
                atexit.unregister(self._sd._exit_handler)
                self.stuck = True

    def _why_lost(self) -> str | None:
        """Why the running stream counts as lost, or None while it delivers."""
        stream = self._stream
        if self._lost or stream is None or not stream.active:
            return "stopped delivering audio (device unplugged, or its sound server stopped?)"
        # The first callback may take a while (sound servers start the source lazily).
        limit = self.stall_s if self._callbacks else max(self.stall_s, 5.0)
        if self._clock() - self._last_callback > limit:
            return f"delivered no audio for {limit:g} s"
        return None

    async def _reconnect(self, why: str) -> None:
        await self._close_stream()
        last = why
        for attempt in range(self.max_retries):
            await asyncio.sleep(min(0.25 * 2 ** attempt, 8.0))
            # Rescan so a replugged device is found, unless that would close another source's
            # stream or one still being opened or closed (PortAudio's terminate closes every stream).
            rescan = MicSource._open_sources == {id(self)} and not portaudio_threads
            try:
                await self._start(rescan)
            except (self._sd.PortAudioError, AudioDeviceError) as e:
                last = str(e)
                continue
            self.reconnects += 1
            return
        raise AudioDeviceError(self.device_label, f"{why}; gave up after {self.max_retries} "
                               f"reopen attempts, last error: {last}")

    _open_sources: set[int] = set()  # ids of the MicSources being iterated, in this process

    def __aiter__(self) -> AsyncIterator[tuple[np.ndarray, int]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[tuple[np.ndarray, int]]:
        if self._running:
            raise RuntimeError(f"{self!r} is already being iterated; one iteration at a time")
        self._running = True
        self._reset_counters()
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        MicSource._open_sources.add(id(self))
        try:
            try:
                await self._start(rescan=False)
            except self._sd.PortAudioError as e:
                raise AudioDeviceError(self.device_label, f"cannot be opened at {self.sample_rate} Hz, "
                                       f"{self.channels} channel(s): {e}") from None
            while True:
                chunk = self._ring.take()
                if chunk is not None:
                    yield chunk, self.sample_rate
                    continue
                why = self._why_lost()
                if why is not None:
                    if not self.retry:
                        raise AudioDeviceError(self.device_label, why)
                    await self._reconnect(why)
                    continue
                self._event.clear()
                self._waiting = True
                if self._ring.pending or self._lost:  # arrived before _waiting was seen
                    self._waiting = False
                    continue
                try:
                    async with asyncio.timeout(self.stall_s / 4):
                        await self._event.wait()
                except TimeoutError:
                    pass  # re-check the stream above
                finally:
                    self._waiting = False
        finally:
            try:
                await self._close_stream()
            finally:  # also when cancelled while closing: a stale id would stop every later rescan
                MicSource._open_sources.discard(id(self))
                self._running = False

    def __repr__(self) -> str:
        return (f"MicSource({self.device_label}, stream_id={self.stream_id!r}, "
                f"sample_rate={self.sample_rate}, channels={self.channels}, block_s={self.block_s}, "
                f"retry={self.retry})")
