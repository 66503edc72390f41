"""What a spoof generator is, and the registry that names them.

A generator turns either bona fide speech (vocoders: copy-synthesis of the
speaker's own utterance) or a text prompt (TTS) into 16 kHz mono float32 audio.
Its ``name`` is the ``attack`` column of the manifest and must never change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol, TypeVar

import numpy as np

Needs = Literal["audio", "text"]


class SynthError(RuntimeError):
    """One item could not be generated; the builder logs the reason and skips the item."""


class GeneratorUnavailable(RuntimeError):
    """A generator's library or program is not installed (the message says what to install)."""


class UnknownGeneratorError(ValueError):
    """A generator name that is not registered."""


@dataclass(frozen=True)
class SynthInput:
    """What one generator call receives. ``rng`` is seeded per item, so output is reproducible."""

    rng: np.random.Generator
    audio: np.ndarray | None = None  # bona fide speech at 16 kHz (vocoders)
    text: str | None = None  # prompt sentence (TTS)


class Generator(Protocol):
    name: ClassVar[str]
    family: ClassVar[str]  # "vocoder" | "neural-vocoder" | "neural-tts" | "rule-tts": for reports
    needs: ClassVar[Needs]
    # The rate the generator synthesizes at, before conversion to 16 kHz: the corpus builder
    # gives every item one pass through the same resampling chain, whatever its native rate.
    native_rate: ClassVar[int]

    def unavailable_reason(self) -> str | None:
        """None when usable here, else one line naming what to install."""

    def __call__(self, item: SynthInput) -> np.ndarray:
        """Return 16 kHz mono float32 audio; raise SynthError for a failing item."""


_REGISTRY: dict[str, Callable[[], Generator]] = {}


GeneratorT = TypeVar("GeneratorT", bound=Generator)


def register(cls: type[GeneratorT]) -> type[GeneratorT]:
    """Class decorator: make a generator available under its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    # Importing the modules runs their @register; the heavy libraries they wrap
    # (pyworld, pysptk, piper) are imported lazily inside them.
    from . import griffinlim, mlsa, neural_vocoder, piper_tts, tts_cli, world  # noqa: F401
    from .own_vocoders import generators  # noqa: F401


def generator_names() -> list[str]:
    _load_all()
    return list(_REGISTRY)


def default_generator_names() -> list[str]:
    """What a build without --generators renders: every generator but the opt-in ones.

    A generator with ``opt_in = True`` (the own vocoders, trained here) is rendered only when
    named, so the default build reproduces the corpus the shipped detectors were trained on.
    """
    _load_all()
    return [name for name, factory in _REGISTRY.items() if not getattr(factory, "opt_in", False)]


def make_generator(name: str) -> Generator:
    _load_all()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownGeneratorError(
            f"unknown generator {name!r}; choose from {', '.join(_REGISTRY)}"
        ) from None
    return factory()


def require_text(item: SynthInput, name: str) -> str:
    if not item.text or not item.text.strip():
        raise SynthError(f"{name}: needs a non-empty prompt text")
    return item.text.strip()


def require_audio(item: SynthInput, name: str) -> np.ndarray:
    if item.audio is None or item.audio.size == 0:
        raise SynthError(f"{name}: needs input speech")
    return item.audio
