"""Command line of the spoof-synthesis corpus builder: ``python -m training.synth --help``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .base import GeneratorUnavailable, UnknownGeneratorError, generator_names, make_generator
from .channel import CHANNELS, UnknownChannelError
from .channel import unavailable_reason as channel_unavailable_reason
from .corpus import DEFAULT_HELDOUT, BuildOptions, CorpusError, build

DESCRIPTION = """\
Build a labelled bona fide / spoof corpus from genuine speech.

For every source utterance the builder writes a re-encoded bona fide copy and
one spoof per generator: vocoders (world, mlsa, griffinlim) resynthesize the
utterance itself; TTS generators (piper, espeak, flite, festival) speak an
LJ Speech prompt of about the same length. Every item, of either class, is
DC-removed, trimmed to speech with random margins, normalized to a random
level around --target-db and given a faint noise floor, and --channel-copies
coded variants (tel8k, mulaw, mp3, opus) are added, so that level, silence and
channel are no shortcut.

Splits are speaker-disjoint (hash of the speaker id); --heldout families are
rendered for eval speakers only, as unseen attacks. Output: 16 kHz mono FLAC
under OUT/SPLIT/ATTACK/ and OUT/manifest.csv with the columns
path,label,speaker,attack,source,split. Re-running the same command resumes:
valid files are kept, only missing ones are made. Items that fail are logged,
listed in OUT/failures.csv and skipped."""

EPILOG = """\
examples:
  python -m training.synth --source ../shared/data/bonafide --out corpus/v1 --workers 2
  python -m training.synth --source ../shared/data/bonafide --out corpus/tiny --limit 20 \\
      --generators world,griffinlim,piper --heldout none
  python -m training.synth --list          # which generators and channels work here"""


def _names(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _ratios(text: str) -> tuple[float, float, float]:
    parts = text.split(",")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected TRAIN,DEV,EVAL fractions such as 0.7,0.1,0.2, got {text!r}")
    try:
        a, b, c = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers, got {text!r}") from None
    return a, b, c


def _floor(text: str) -> tuple[float, float] | None:
    if text.strip().lower() == "none":
        return None
    try:
        low, high = (float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in dBFS such as -78,-66, or none; got {text!r}") from None
    return low, high


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.synth", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, help="bona fide speech: a manifest CSV (path[,speaker,source]), "
                   "a folder holding manifest.csv, or a folder of audio files "
                   "(speaker = file name up to the first - or _)")
    p.add_argument("--out", type=Path, help="output folder (created; an existing one is resumed)")
    p.add_argument("--generators", type=_names, default=(), metavar="A,B",
                   help=f"comma list of generators (default: all: {','.join(generator_names())})")
    p.add_argument("--heldout", type=_names, default=DEFAULT_HELDOUT, metavar="A,B",
                   help=f"generators rendered for eval speakers only (default: {','.join(DEFAULT_HELDOUT)}; "
                   "'none' for no unseen attacks)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only N source utterances (a fixed pseudo-random choice)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed; every item derives its own (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--channels", type=_names, default=CHANNELS, metavar="A,B",
                   help=f"channels to draw coded copies from (default: {','.join(CHANNELS)})")
    p.add_argument("--channel-copies", type=int, default=1, metavar="K",
                   help="coded copies per item besides the clean one, for both classes (default 1; 0: none)")
    p.add_argument("--split", type=_ratios, default=(0.7, 0.1, 0.2), metavar="TR,DEV,EV",
                   help="speaker fractions for train,dev,eval (default 0.7,0.1,0.2)")
    p.add_argument("--target-db", type=float, default=-28.0, help="active speech level in dBFS (default -28)")
    p.add_argument("--level-jitter-db", type=float, default=4.0,
                   help="uniform +- jitter around --target-db, both classes alike (default 4)")
    p.add_argument("--noise-floor-db", type=_floor, default=(-78.0, -66.0), metavar="LOW,HIGH",
                   help="faint white-noise floor added to every item, level drawn from this range, so digital "
                   "silence in TTS pauses is no shortcut (default -78,-66; 'none' for off)")
    p.add_argument("--max-seconds", type=float, default=12.0,
                   help="cut sources and outputs to this length (default 12)")
    p.add_argument("--prompts", type=Path, default=None,
                   help="TTS prompts, 'id|text' lines (default: text/ljspeech_sentences.tsv near --source)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list", action="store_true", help="list generators and channels with their status, then exit")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="do not log failed items as they happen (the summary and failures.csv still list them)")
    return p


def list_status() -> None:
    for name in generator_names():
        gen = make_generator(name)
        reason = gen.unavailable_reason()
        print(f"{name:<11} {gen.family:<11} {'ok' if reason is None else 'missing: ' + reason}")
    for name in CHANNELS:
        reason = channel_unavailable_reason(name)
        print(f"{name:<11} {'channel':<11} {'ok' if reason is None else 'missing: ' + reason}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR if args.quiet else logging.WARNING, format="%(levelname)s %(message)s")
    if args.list:
        list_status()
        return 0
    if args.source is None or args.out is None:
        parser().error("--source and --out are required (or use --list)")
    try:
        opts = BuildOptions(
            source=args.source, out=args.out, generators=args.generators, heldout=args.heldout,
            limit=args.limit, seed=args.seed, workers=args.workers, channels=args.channels,
            channel_copies=args.channel_copies, split_ratios=args.split, target_db=args.target_db,
            level_jitter_db=args.level_jitter_db, noise_floor_db=args.noise_floor_db,
            max_seconds=args.max_seconds, prompts=args.prompts,
            progress=not args.no_progress,
        )
        summary = build(opts)
    except (CorpusError, UnknownGeneratorError, UnknownChannelError, GeneratorUnavailable,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
