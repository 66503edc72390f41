"""``espeak``, ``flite``, ``festival``: rule-based and diphone TTS through their CLIs.

Formant (eSpeak NG), clustergen/diphone (Flite) and diphone (Festival) synthesis
are old, but they are distinct artefact families and cost nothing to run. Each
call writes the prompt to a temporary text file (no shell, no quoting issues)
and reads back the WAV the program writes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from .audio import to_mono_16k
from .base import Needs, SynthError, SynthInput, register, require_text

TIMEOUT_S = 120.0


class CliTts:
    """Shared plumbing: availability check, temp files, error reporting."""

    name: ClassVar[str]
    family: ClassVar[str] = "rule-tts"
    needs: ClassVar[Needs] = "text"
    binary: ClassVar[str]
    apt_package: ClassVar[str]

    def unavailable_reason(self) -> str | None:
        if shutil.which(self.binary) is None:
            return f"{self.name} needs the {self.binary} program: apt-get install -y {self.apt_package}"
        return None

    def command(self, text_file: Path, wav_file: Path, rng: np.random.Generator) -> list[str]:
        raise NotImplementedError

    def __call__(self, item: SynthInput) -> np.ndarray:
        text = require_text(item, self.name)
        if self.unavailable_reason() is not None:
            raise SynthError(str(self.unavailable_reason()))
        with tempfile.TemporaryDirectory(prefix=f"synth-{self.name}-") as tmp:
            text_file, wav_file = Path(tmp) / "prompt.txt", Path(tmp) / "out.wav"
            text_file.write_text(text + "\n", encoding="utf-8")
            cmd = self.command(text_file, wav_file, item.rng)
            try:
                done = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT_S, check=False)
            except subprocess.TimeoutExpired as err:
                raise SynthError(f"{self.name}: {self.binary} timed out after {TIMEOUT_S:.0f} s") from err
            if done.returncode != 0 or not wav_file.is_file():
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output file"]
                raise SynthError(f"{self.name}: {self.binary} exited {done.returncode}: {tail[0]}")
            try:
                x, sr = sf.read(str(wav_file), dtype="float32", always_2d=True)
            except sf.LibsndfileError as err:
                raise SynthError(f"{self.name}: unreadable WAV from {self.binary}: {err}") from err
        return to_mono_16k(x, sr)


@register
@dataclass
class Espeak(CliTts):
    name: ClassVar[str] = "espeak"
    binary: ClassVar[str] = "espeak-ng"
    apt_package: ClassVar[str] = "espeak-ng"
    native_rate: ClassVar[int] = 22050
    variants: tuple[str, ...] = ("", "m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4")
    speed_wpm: tuple[int, int] = (140, 185)
    pitch: tuple[int, int] = (30, 70)

    def command(self, text_file: Path, wav_file: Path, rng: np.random.Generator) -> list[str]:
        variant = self.variants[int(rng.integers(len(self.variants)))]
        voice = "en-us" + (f"+{variant}" if variant else "")
        speed = int(rng.integers(self.speed_wpm[0], self.speed_wpm[1] + 1))
        pitch = int(rng.integers(self.pitch[0], self.pitch[1] + 1))
        return [self.binary, "-v", voice, "-s", str(speed), "-p", str(pitch),
                "-w", str(wav_file), "-f", str(text_file)]


@register
@dataclass
class Flite(CliTts):
    name: ClassVar[str] = "flite"
    binary: ClassVar[str] = "flite"
    apt_package: ClassVar[str] = "flite"
    native_rate: ClassVar[int] = 16000  # every voice listed below
    # "kal" is left out: it is 8 kHz, and a band limit unique to one attack is a shortcut.
    voices: tuple[str, ...] = ("kal16", "awb", "rms", "slt")
    stretch: tuple[float, float] = (0.9, 1.15)

    def command(self, text_file: Path, wav_file: Path, rng: np.random.Generator) -> list[str]:
        voice = self.voices[int(rng.integers(len(self.voices)))]
        stretch = float(rng.uniform(*self.stretch))
        return [self.binary, "-voice", voice, "--setf", f"duration_stretch={stretch:.3f}",
                "-f", str(text_file), "-o", str(wav_file)]


@register
@dataclass
class Festival(CliTts):
    name: ClassVar[str] = "festival"
    binary: ClassVar[str] = "text2wave"  # festival's own batch front end
    apt_package: ClassVar[str] = "festival"
    native_rate: ClassVar[int] = 16000  # kallpc16k
    stretch: tuple[float, float] = (0.9, 1.15)

    def unavailable_reason(self) -> str | None:
        reason = super().unavailable_reason()
        # Debian's festival only recommends its voices, so --no-install-recommends gives none.
        voices = Path("/usr/share/festival/voices")
        if reason is None and voices.parent.is_dir() and not any(voices.glob("*/*")):
            reason = "festival has no voice: apt-get install -y festvox-kallpc16k"
        return reason

    def command(self, text_file: Path, wav_file: Path, rng: np.random.Generator) -> list[str]:
        stretch = float(rng.uniform(*self.stretch))
        return [self.binary, "-o", str(wav_file), "-eval",
                f"(Parameter.set 'Duration_Stretch {stretch:.3f})", str(text_file)]
