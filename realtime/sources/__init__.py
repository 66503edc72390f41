"""Audio sources: async iterators of ``(float32[n, channels], sample_rate)`` chunks."""

from .audio_devices import AudioDeviceError, MicUnavailableError  # sounddevice loads on use
from .base import Source
from .file import FileSource, read_audio
from .mic import MicSource, list_devices
from .stdin import StdinSource

__all__ = ["Source", "FileSource", "StdinSource", "read_audio", "MicSource", "AudioDeviceError",
           "MicUnavailableError", "list_devices"]
