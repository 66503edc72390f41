"""Exceptions of the engines package; the CLI turns each into one line on stderr."""
from __future__ import annotations


class EngineError(RuntimeError):
    """An engine cannot be created or run here (missing backend, bad device, bad input)."""


class CheckpointError(ValueError):
    """A checkpoint is malformed, mismatched or tampered with; ``field`` names what is wrong."""

    def __init__(self, path: object, field: str, message: str) -> None:
        self.path, self.field = path, field
        super().__init__(f"{path}: field '{field}': {message}")


class MissingExtraError(ImportError):
    """An optional dependency is absent; the message names the extra that installs it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}': pip install 'realtime-detect[{extra}]'"
            " -c constraints.txt"
        )
