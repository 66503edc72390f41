"""Audio sources: async iterators of ``(float32[n, channels], sample_rate)`` chunks."""

from .base import Source
from .file import FileSource, read_audio

__all__ = ["Source", "FileSource", "read_audio"]
