"""Audio sources: async iterators of ``(float32[n, channels], sample_rate)`` chunks."""

from .base import Source
from .file import FileSource, read_audio
from .mic import AudioDeviceError, MicSource, MicUnavailableError, list_devices  # sounddevice loads on use
from .stdin import StdinSource

__all__ = ["Source", "FileSource", "StdinSource", "read_audio", "MicSource", "AudioDeviceError",
           "MicUnavailableError", "list_devices"]
