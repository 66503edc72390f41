"""Audio sources: async iterators of ``(float32[n, channels], sample_rate)`` chunks."""

from .base import Source
from .file import FileSource, read_audio
from .stdin import StdinSource

__all__ = ["Source", "FileSource", "StdinSource", "read_audio"]
