"""Command line of the spoof-synthesis corpus builder: ``python -m training.synth --help``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .base import GeneratorUnavailable, UnknownGeneratorError, default_generator_names, generator_names, make_generator
from .channel import CHANNELS, UnknownChannelError
from .channel import unavailable_reason as channel_unavailable_reason
from .corpus import DEFAULT_HELDOUT, DEFAULT_SHARES, BuildOptions, CorpusError, build

DESCRIPTION = """\
Build a labelled bona fide / spoof corpus from genuine speech.

For every source utterance the builder writes a re-encoded bona fide copy and
spoofs from a seeded --share of the generators: vocoders (world, mlsa,
griffinlim) and the pretrained neural vocoders (hifigan-universal, hifigan-lj,
hifigan-16k: copy-synthesis) resynthesize the utterance itself; TTS generators (piper, espeak, flite, festival) speak an LJ Speech
prompt of about the same length. Every item, of either class, passes once
through --chain-rate, is DC-removed, trimmed to speech with random margins,
normalized to a random level around --target-db and given a faint noise
floor, and --channel-copies coded variants (tel8k, mulaw, mp3, opus) are
added, so that sample rate, level, silence and channel are no shortcut.

Splits are speaker-disjoint (hash of the speaker id); every family is in every
split (unseen-attack numbers come from python -m training.generalization);
--heldout families are rendered for eval speakers only. Output: 16 kHz mono FLAC
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


def _shares(text: str) -> dict[str, float]:
    shares = dict(DEFAULT_SHARES)
    for part in _names(text):
        name, sep, value = part.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=SHARE pairs such as hifigan-lj=0.5, got {part!r}")
    return shares


def _rate(text: str) -> int | None:
    if text.strip().lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sample rate in Hz such as 22050, or none; got {text!r}") from None


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
                   help=f"comma list of generators (default: {','.join(default_generator_names())}; "
                   f"opt-in, when trained: {','.join(sorted(set(generator_names()) - set(default_generator_names())))})")
    p.add_argument("--heldout", type=_names, default=DEFAULT_HELDOUT, metavar="A,B",
                   help=f"generators rendered for eval speakers only (default: {','.join(DEFAULT_HELDOUT)}; "
                   "'none' for no unseen attacks)")
    p.add_argument("--share", type=_shares, default=dict(DEFAULT_SHARES), metavar="NAME=F,...",
                   help="render each generator for a seeded share F of the utterances, a different draw per "
                   "generator; '*' names all others (default: "
                   + ",".join(f"{k}={v:g}" for k, v in DEFAULT_SHARES.items()) + "; e.g. '*=1' for every one)")
    p.add_argument("--chain-rate", type=_rate, default=22050, metavar="HZ",
                   help="every item passes once through this rate on its way to 16 kHz, so the resampler's "
                   "band edge marks no class (default 22050; 'none': off)")
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
        print(f"{name:<17} {gen.family:<14} {'ok' if reason is None else 'missing: ' + reason}")
    for name in CHANNELS:
        reason = channel_unavailable_reason(name)
        print(f"{name:<17} {'channel':<14} {'ok' if reason is None else 'missing: ' + reason}")


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
            limit=args.limit, shares=args.share, chain_rate=args.chain_rate, seed=args.seed, workers=args.workers, channels=args.channels,
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
