"""Make the detector's bundled demo clip: the piper voice reading LJ Speech sentences.

``python -m training.synth.demo --out realtime/assets/demo.flac``

The clip is a spoof by construction (neural TTS), about 12 s of 16 kHz mono
FLAC, reproducible byte for byte: the sentences are fixed by id and the VITS
noise comes from a fixed seed (see piper_tts).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, normalize_level, trim_edges, write_flac
from .base import SynthInput
from .corpus import CorpusError, find_prompts
from .piper_tts import Piper

DEMO_SENTENCES = ("LJ001-0084", "LJ005-0036", "LJ008-0308")


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    prompts: Path
    sentence_ids: tuple[str, ...] = DEMO_SENTENCES
    seed: int = 0
    pause_s: float = 0.45  # between sentences, as a reader would pause
    level_db: float = -24.0  # a comfortable listening level, peaks stay below full scale


def sentences_by_id(prompts: Path, ids: tuple[str, ...]) -> list[str]:
    table = {}
    with prompts.open(encoding="utf-8") as fh:
        for line in fh:
            key, _, text = line.rstrip("\n").partition("|")
            table[key] = text
    missing = [i for i in ids if i not in table]
    if missing:
        raise CorpusError(f"{prompts} lacks sentence ids {', '.join(missing)}")
    return [table[i] for i in ids]


def make_demo(opts: DemoOptions) -> np.ndarray:
    """Synthesize, join with pauses, trim, level-normalize and write the clip; returns it."""
    piper = Piper()
    reason = piper.unavailable_reason()
    if reason:
        raise CorpusError(reason)
    rng = np.random.default_rng(opts.seed)
    pause = np.zeros(int(opts.pause_s * SAMPLE_RATE), dtype=np.float32)
    pieces = []
    for text in sentences_by_id(opts.prompts, opts.sentence_ids):
        pieces += [trim_edges(piper(SynthInput(rng=rng, text=text)), 0.0, 0.0), pause]
    clip = trim_edges(np.concatenate(pieces[:-1]), 0.2, 0.3)
    clip = normalize_level(clip, opts.level_db)
    write_flac(opts.out, clip)
    return clip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.synth.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="FLAC file to write (16 kHz mono)")
    p.add_argument("--prompts", type=Path, default=None,
                   help="ljspeech_sentences.tsv (default: ../shared/data/text/ljspeech_sentences.tsv)")
    p.add_argument("--seed", type=int, default=0, help="VITS noise seed (default 0)")
    args = p.parse_args(argv)
    prompts = args.prompts or find_prompts(Path("../shared/data")) or find_prompts(Path.cwd())
    if prompts is None or not prompts.is_file():
        print("error: no ljspeech_sentences.tsv found; pass --prompts FILE", file=sys.stderr)
        return 2
    try:
        clip = make_demo(DemoOptions(out=args.out, prompts=prompts, seed=args.seed))
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out}: {clip.size / SAMPLE_RATE:.1f} s, {size_kb:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
