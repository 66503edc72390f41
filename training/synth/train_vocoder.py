"""Command line of the own-vocoder trainer: ``python -m training.synth.train_vocoder --help``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DESCRIPTION = """\
Train a neural vocoder of another architecture than HiFi-GAN on the genuine speech, for
copy-synthesis spoofs in the corpus builder (generators vocos-ours, melgan-ours).

Architectures: vocos (ConvNeXt on the log-mel, STFT magnitude and phase, inverse STFT;
Siuzdak 2023) and melgan (transposed-conv upsampling and dilated residual stacks; Kumar et
al. 2019). Training uses random segments of train-split speakers only (the corpus builder's
speaker split), multi-resolution STFT + mel L1 losses and, from --gan-from-step on, a
multi-resolution spectrogram discriminator. OUT gets config.json (architecture and the mel
analysis), generator.safetensors, the resume state, log.csv (losses) and validation.csv
(reference log-mel distance of copy-syntheses of dev-split speakers, in nats). The same
seed, data and --threads give the same weights; --resume continues at the saved step."""

EPILOG = """\
examples:
  python -m training.synth.train_vocoder --arch vocos --data ../shared/data/bonafide \\
      --out training/synth/weights/vocos-ours --minutes 90
  python -m training.synth.train_vocoder --arch vocos --data ../shared/data/bonafide \\
      --out training/synth/weights/vocos-ours --minutes 60 --resume"""


def parser() -> argparse.ArgumentParser:
    from .own_vocoders.config import ARCH_OPTIONS
    from .own_vocoders.trainer import TrainOptions

    d = TrainOptions.__dataclass_fields__
    p = argparse.ArgumentParser(prog="python -m training.synth.train_vocoder", description=DESCRIPTION,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", required=True, choices=list(ARCH_OPTIONS), help="vocoder architecture")
    p.add_argument("--data", required=True, type=Path, help="genuine speech: a manifest CSV or a folder with manifest.csv")
    p.add_argument("--out", required=True, type=Path, help="run folder (training/synth/weights/NAME for the builder)")
    p.add_argument("--minutes", type=float, default=d["minutes"].default,
                   help="training time of this session (default %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="stop at this total step count (over all sessions)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out at its saved step")
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--threads", type=int, default=d["threads"].default, help="torch threads (default %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=d["device"].default,
                   help="where to train (default %(default)s; a checkpoint moves between them on --resume)")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default)
    p.add_argument("--segment-seconds", type=float, default=d["segment_seconds"].default)
    p.add_argument("--lr", type=float, default=d["lr"].default)
    p.add_argument("--gan-from-step", type=int, default=d["gan_from_step"].default,
                   help="step at which the discriminator joins (default %(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"].default, help="steps")
    p.add_argument("--validate-every", type=int, default=d["validate_every"].default, help="steps")
    p.add_argument("--val-utterances", type=int, default=d["val_utterances"].default)
    p.add_argument("--max-files", type=int, default=None, help="use at most this many files per split (quick runs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from .own_vocoders.checkpoint import CheckpointError
    from .own_vocoders.config import VocoderConfigError
    from .own_vocoders.data import SpeechDataError
    from .own_vocoders.trainer import TrainError, TrainOptions, train

    try:
        opts = TrainOptions(
            arch=args.arch, data=args.data, out=args.out, minutes=args.minutes, steps=args.steps, seed=args.seed,
            threads=args.threads, device=args.device, batch_size=args.batch_size, segment_seconds=args.segment_seconds, lr=args.lr,
            gan_from_step=args.gan_from_step, checkpoint_every=args.checkpoint_every,
            validate_every=args.validate_every, val_utterances=args.val_utterances, max_files=args.max_files,
            resume=args.resume, progress=not args.no_progress,
        )
        result = train(opts)
    except (TrainError, CheckpointError, VocoderConfigError, SpeechDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    curve = ", ".join(f"{s}: {d:.3f}" for s, d in result.validation)
    print(f"{args.arch}: step {result.step}, {result.elapsed_s / 60:.1f} min in all; validation mel distance {curve}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
