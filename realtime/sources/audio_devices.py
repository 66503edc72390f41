"""PortAudio input devices: loading sounddevice, listing the devices and choosing one by index or name.

sounddevice is imported on first use (extra ``realtime-detect[mic]``); it needs the
PortAudio library (Debian: ``libportaudio2``).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ..errors import AudioInputError

__all__ = ["AudioDeviceError", "MicUnavailableError", "DeviceSpec", "import_sounddevice", "rescan_devices",
           "input_devices", "resolve_device"]

DeviceSpec = int | str | None


class MicUnavailableError(AudioInputError):
    """Microphone input cannot work here: sounddevice or the PortAudio library is missing."""

    def __init__(self, reason: str) -> None:
        super().__init__("microphone input", reason)


class AudioDeviceError(AudioInputError):
    """An input device that does not exist, is ambiguous, cannot be opened or stopped working."""


def import_sounddevice() -> ModuleType:
    """Import sounddevice, turning its two failure modes into one-line install instructions."""
    try:
        import sounddevice
    except ModuleNotFoundError:
        raise MicUnavailableError(
            "the Python package 'sounddevice' is not installed: "
            "pip install 'realtime-detect[mic]' -c constraints.txt"
        ) from None
    except OSError as e:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise MicUnavailableError(
            f"the PortAudio library was not found ({e}); install it: apt-get install libportaudio2"
        ) from None
    return sounddevice


def rescan_devices(sd: ModuleType) -> None:
    """Re-initialise PortAudio so it sees devices (and sound servers) that appeared since import.

    PortAudio enumerates devices once, at initialisation; ``_terminate``/``_initialize``
    are sounddevice's documented-in-source way to redo that. It closes every open
    PortAudio stream in the process, so call it only when none is open.
    """
    sd._terminate()
    sd._initialize()


def input_devices(sd: ModuleType | None = None) -> tuple[list[dict[str, Any]], int]:
    """All PortAudio devices (dicts as ``sounddevice.query_devices()``) and the default input index (-1: none)."""
    sd = sd or import_sounddevice()
    devices = [dict(d) for d in sd.query_devices()]
    default = sd.default.device[0]  # PortAudio's default input unless the program set one
    return devices, default if isinstance(default, int) and default >= 0 else -1


def _label(index: int, devices: Sequence[dict[str, Any]]) -> str:
    return f"input device {index} {devices[index]['name']!r}"


def resolve_device(spec: DeviceSpec, devices: Sequence[dict[str, Any]], default: int) -> int:
    """The index of the input device ``spec`` names.

    ``spec`` is None (the default input), an index (int, or a str of digits as a
    command line gives it), or a case-insensitive substring of the device name; an
    exact (case-insensitive) name match wins over substring matches.

    Raises:
        AudioDeviceError: no such device, not an input device, or an ambiguous name
            (the message lists the candidates and points at ``--list-devices``).
    """
    hint = "see realtime-detect --list-devices"
    inputs = [i for i, d in enumerate(devices) if d.get("max_input_channels", 0) > 0]
    if not inputs:
        raise AudioDeviceError(f"input device {spec!r}" if spec is not None else "default input device",
                               "no audio input devices found (is a microphone or sound server available?)")
    if spec is None:
        if default not in inputs:
            raise AudioDeviceError("default input device",
                                   f"there is none; choose one with --device ({hint})")
        return default
    if isinstance(spec, bool):
        raise TypeError(f"device must be None, an index or a name, got {spec!r}")
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        if not 0 <= spec < len(devices):
            raise AudioDeviceError(f"input device {spec}",
                                   f"no such index (accepted: {', '.join(map(str, inputs))}; {hint})")
        if spec not in inputs:
            raise AudioDeviceError(_label(spec, devices), f"has no input channels ({hint})")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device must be None, an index or a name, got {type(spec).__name__}")
    needle = spec.strip().lower()
    if not needle:
        raise AudioDeviceError("input device ''", f"empty name ({hint})")
    exact = [i for i in inputs if devices[i]["name"].lower() == needle]
    found = exact or [i for i in inputs if needle in devices[i]["name"].lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        names = ", ".join(repr(devices[i]["name"]) for i in inputs)
        raise AudioDeviceError(f"input device {spec!r}", f"no input device name contains it (accepted: {names})")
    candidates = ", ".join(f"{i} {devices[i]['name']!r}" for i in found)
    raise AudioDeviceError(f"input device {spec!r}",
                           f"ambiguous, matches {candidates}; give the index or a longer name")
