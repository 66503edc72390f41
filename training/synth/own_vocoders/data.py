"""Genuine speech for vocoder training: train-split speakers to learn from, dev speakers to validate on.

Speakers are split exactly as the corpus builder splits them (``split_for_speaker``), so no
vocoder has heard an eval speaker: the detector's eval spoofs are then copy-syntheses of
voices new to the vocoder, as a real attacker's would be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import BadAudioError, load_audio
from ..corpus import CorpusError, Utterance, read_source, split_for_speaker, stable_hash


class SpeechDataError(ValueError):
    """No usable speech for the requested split (the message says where it looked)."""


def split_utterances(data: Path, split: str) -> list[Utterance]:
    """The utterances of ``split``'s speakers (the builder's default ratios), in a stable seed-free order."""
    try:
        utterances = read_source(data)
    except CorpusError as err:
        raise SpeechDataError(str(err)) from None
    return sorted((u for u in utterances if split_for_speaker(u.speaker) == split),
                  key=lambda u: stable_hash("vocoder", u.key))


def load_split(data: Path, split: str, min_samples: int, max_files: int | None = None) -> list[np.ndarray]:
    """Audio of ``split``'s speakers at least ``min_samples`` long (see ``split_utterances``)."""
    chosen = split_utterances(data, split)
    clips: list[np.ndarray] = []
    for utt in chosen:
        if max_files is not None and len(clips) >= max_files:
            break
        try:
            x = load_audio(utt.path)
        except BadAudioError:
            continue  # an unreadable or silent file teaches nothing; the builder skips it too
        if x.size >= min_samples:
            clips.append(x)
    if not clips:
        raise SpeechDataError(f"{data}: no {split}-split speech of at least {min_samples / 16000:.2f} s")
    return clips


@dataclass
class SegmentSampler:
    """Random fixed-length segments, every sample position of every clip equally likely."""

    clips: list[np.ndarray]
    length: int
    gain_db: float = 6.0  # +- uniform: the vocoder meets speech at any level in the corpus

    def __post_init__(self) -> None:
        self._starts = np.array([c.size - self.length + 1 for c in self.clips], dtype=np.float64)
        self._weights = self._starts / self._starts.sum()

    def batch(self, rng: np.random.Generator, size: int) -> np.ndarray:
        out = np.empty((size, self.length), dtype=np.float32)
        for i in range(size):
            k = int(rng.choice(len(self.clips), p=self._weights))
            start = int(rng.integers(0, int(self._starts[k])))
            gain = 10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0)
            out[i] = np.clip(self.clips[k][start : start + self.length] * gain, -1.0, 1.0)
        return out
